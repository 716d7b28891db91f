'use strict';
// Unit tests of the gateway's pure modules: `node --test sut/gateway/test/`.

const test = require('node:test');
const assert = require('node:assert/strict');
const { parseRtp, buildRtp, isRtcp, seqDelta } = require('../src/rtp');
const { encodeWav, decodeWav, resampleLinear } = require('../src/wav');
const { Vad, rmsDbfs } = require('../src/vad');
const { buildConfig, ConfigError } = require('../src/config');
const { Registry, Counter, Histogram, LoopDelay } = require('../src/metrics');

test('RTP: parse skips CSRCs, the 0xBEDE extension block and padding', () => {
  const payload = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
  const header = Buffer.alloc(12);
  header[0] = 0x80 | 0x20 | 0x10 | 2; // v2, padding, extension, 2 CSRCs
  header[1] = 0x80 | 100;
  header.writeUInt16BE(65535, 2);
  header.writeUInt32BE(123456, 4);
  header.writeUInt32BE(0xcafebabe, 8);
  const csrcs = Buffer.alloc(8, 7);
  const ext = Buffer.from([0xbe, 0xde, 0x00, 0x02, 0x10, 0xff, 0x31, 0x7f, 0x00, 0x00, 0x00, 0x00]);
  const padding = Buffer.from([0, 0, 3]);
  const pkt = parseRtp(Buffer.concat([header, csrcs, ext, payload, padding]));
  assert.equal(pkt.marker, true);
  assert.equal(pkt.payloadType, 100);
  assert.equal(pkt.sequenceNumber, 65535);
  assert.equal(pkt.timestamp, 123456);
  assert.equal(pkt.ssrc, 0xcafebabe);
  assert.equal(pkt.extensionProfile, 0xbede);
  assert.deepEqual(pkt.payload, payload);
});

test('RTP: build/parse round trip, RTCP detection, truncation, sequence wrap', () => {
  const payload = Buffer.from('opus');
  const buf = buildRtp({ payloadType: 100, sequenceNumber: 70000, timestamp: 2 ** 32 + 5, ssrc: 42, marker: false, payload });
  const pkt = parseRtp(buf);
  assert.equal(pkt.sequenceNumber, 70000 & 0xffff);
  assert.equal(pkt.timestamp, 5);
  assert.equal(pkt.marker, false);
  assert.deepEqual(pkt.payload, payload);
  assert.equal(isRtcp(buf), false);
  assert.equal(isRtcp(Buffer.from([0x80, 200, 0, 6])), true);
  assert.equal(parseRtp(buf.subarray(0, 8)), null);
  assert.equal(seqDelta(65535, 1), 2);
  assert.equal(seqDelta(5, 4), 0xffff);
});

test('WAV: encode/decode round trip, stereo downmix, resample', () => {
  const samples = Int16Array.from([0, 1000, -1000, 32767, -32768]);
  const back = decodeWav(encodeWav(samples, 48000));
  assert.equal(back.sampleRate, 48000);
  assert.deepEqual([...back.samples], [...samples]);
  const stereo = encodeWav(Int16Array.from([100, 300, -100, -300]), 16000);
  stereo.writeUInt16LE(2, 22); // pretend 2 channels
  assert.deepEqual([...decodeWav(stereo).samples], [200, -200]);
  assert.equal(resampleLinear(new Int16Array(160), 16000, 48000).length, 480);
  assert.throws(() => decodeWav(Buffer.from('nope')), /RIFF/);
});

function tone(n, amp) {
  const s = new Int16Array(n);
  for (let i = 0; i < n; i++) s[i] = Math.round(amp * Math.sin(i / 5));
  return s;
}

test('VAD: start at first voiced frame, end after hangover, speech end = last voiced packet', () => {
  const got = [];
  const vad = new Vad({ thresholdDbfs: -50, hangoverMs: 100, maxUtteranceMs: 10000, prerollMs: 40, onUtterance: (u) => got.push(u) });
  let t = 0;
  const feed = (samples) => { vad.push(samples, t); t += 20; };
  for (let i = 0; i < 10; i++) feed(new Int16Array(960)); // silence
  for (let i = 0; i < 25; i++) feed(tone(960, 3000)); // 500 ms of voice, packets at t=200..680
  for (let i = 0; i < 4; i++) feed(new Int16Array(960));
  assert.equal(got.length, 0, 'still inside the hangover');
  feed(new Int16Array(960)); // 5th unvoiced frame = 100 ms
  assert.equal(got.length, 1);
  const u = got[0];
  assert.equal(u.speechStartMs, 200);
  assert.equal(u.speechEndMs, 680);
  assert.equal(u.voicedMs, 500);
  assert.equal(u.reason, 'hangover');
  assert.equal(u.audio.length, 960 * (2 + 25 + 5)); // preroll + voice + hangover
  assert.ok(rmsDbfs(tone(960, 3000)) > -50);
});

test('VAD: maxUtteranceMs cuts, then the next voiced frame starts a new utterance; flush closes', () => {
  const got = [];
  const vad = new Vad({ thresholdDbfs: -50, hangoverMs: 400, maxUtteranceMs: 200, onUtterance: (u) => got.push(u) });
  for (let i = 0; i < 15; i++) vad.push(tone(960, 3000), i * 20);
  assert.equal(got.length, 1);
  assert.equal(got[0].reason, 'max');
  assert.equal(got[0].speechEndMs, 180);
  assert.equal(vad.inSpeech, true);
  vad.flush('idle');
  assert.equal(got.length, 2);
  assert.equal(got[1].speechStartMs, 200);
  assert.equal(got[1].reason, 'idle');
});

test('metrics: event-loop delay quantiles, live until a window closes, then the closed window', async () => {
  // 50 ms between the monitor's ticks: an on-time tick reads ~0, not 50 ms (the resolution is not delay).
  // Wide margins: `node --test` runs the media tests' workers beside this one on a busy machine.
  const delay = new LoopDelay('loop_delay_seconds', 'loop delay', { windowMs: 3600e3, resolutionMs: 50 });
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  try {
    await wait(330); // the first tick starts the monitor's clock; ~5 on-time ticks follow
    const until = performance.now() + 150;
    while (performance.now() < until); // hold the loop: the next tick is >= 100 ms late
    await wait(60); // let that late tick happen and be recorded
    const live = delay.lines();
    assert.deepEqual(live.map((l) => l.split(' ')[0]), ['0.5', '0.9', '0.99', '1'].map((q) => `loop_delay_seconds{quantile="${q}"}`));
    const [p50, , , max] = live.map((l) => Number(l.split(' ')[1]));
    assert.ok(p50 < 0.025, `p50 ${p50} s: the on-time ticks`);
    assert.ok(max >= 0.09 && max < 5, `max ${max} s: the held loop`);
    delay.roll();
    assert.equal(delay.monitor.count, 0); // the next window starts empty
    assert.deepEqual(delay.lines(), live); // and the closed one is what a scrape reads
    const r = new Registry();
    r.add(delay);
    assert.match(r.render(), /^# TYPE loop_delay_seconds gauge$/m);
  } finally {
    delay.stop();
  }
});

test('config: defaults, validation errors name the key', () => {
  const { config, unknownKeys } = buildConfig({ port: 3100, services: { stt: 'http://127.0.0.1:9/' }, extra: 1 });
  assert.equal(config.services.stt, 'http://127.0.0.1:9');
  assert.equal(config.announcedIp, '127.0.0.1');
  assert.deepEqual(unknownKeys, ['extra']);
  assert.throws(() => buildConfig({ vad: { hangoverMs: 'x' } }), (e) => e instanceof ConfigError && /vad\.hangoverMs/.test(e.message));
  assert.throws(() => buildConfig({ rtcMinPort: 5000, rtcMaxPort: 4000 }), /rtcMaxPort/);
});

test('metrics: Prometheus text exposition', () => {
  const r = new Registry();
  r.add(new Counter('c_total', 'a counter')).inc({ stage: 'stt' }, 2);
  r.add(new Histogram('h_seconds', 'a histogram', [0.1, 1])).observe({ stage: 'e2e' }, 0.5);
  const text = r.render();
  assert.match(text, /^c_total\{stage="stt"\} 2$/m);
  assert.match(text, /^h_seconds_bucket\{stage="e2e",le="0.1"\} 0$/m);
  assert.match(text, /^h_seconds_bucket\{stage="e2e",le="1"\} 1$/m);
  assert.match(text, /^h_seconds_count\{stage="e2e"\} 1$/m);
});
