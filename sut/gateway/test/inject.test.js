'use strict';
// The TTS Opus packetizer against a real mediasoup worker (MEDIASOUP_WORKER_BIN; skipped without one,
// failed without one under SPEECHLOAD_REQUIRE_ALL=1, see prereq.js): an OpusClip (the TTS service's
// packets) goes out through Injector → TTS producer → PlainTransport consumer → UDP socket unchanged,
// stamped and paced by each packet's own duration. Run: `npm test` in sut/gateway.

const test = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('dgram');
const { EventEmitter, once } = require('events');
const { needs, workerBin } = require('./prereq');

const BIN = workerBin();

const { parseRtp, isRtcp } = require('../src/rtp');
const { createMetrics } = require('../src/metrics');
const { OpusEncoder } = require('../src/opus');
const { OpusClip } = require('../src/ttsaudio');
const { nowMs } = require('../src/clock');

/** 20 ms packets of a tone, plus (CELT, code 1) 2 × 20 ms = 40 ms packets: durations differ. */
function clipPackets() {
  const enc = new OpusEncoder();
  const out = [];
  for (let k = 0; k < 40; k++) {
    const s = new Int16Array(960).map((_, i) => Math.round(6000 * Math.sin((k * 960 + i) * 0.05)));
    out.push(enc.encode(s, 960));
  }
  enc.free();
  out.splice(5, 0, Buffer.from([(31 << 3) | 1, 1, 2, 3]), Buffer.from([(31 << 3) | 1, 4, 5, 6]));
  return out; // 42 packets, 880 ms
}

test('TTS packetizer: Opus packets pass through, RTP time and pacing follow each packet', needs(BIN, 'no mediasoup worker binary'), async (t) => {
  const mediasoup = require('mediasoup');
  const { Injector } = require('../src/inject');
  const worker = await mediasoup.createWorker({ logLevel: 'error', rtcMinPort: 47000, rtcMaxPort: 47999 });
  t.after(() => worker.close());
  const router = await worker.createRouter({ mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }] });
  const inj = await Injector.create({ router, sourceProducerId: 'src', language: 'es', metrics: createMetrics(), gapMs: 100 });
  const sock = dgram.createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const got = [];
  const ev = new EventEmitter();
  sock.on('message', (m) => {
    if (isRtcp(m)) return;
    got.push({ at: nowMs(), ...parseRtp(m) });
    ev.emit('packet');
  });
  const pt = await router.createPlainTransport({ listenInfo: { protocol: 'udp', ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
  await pt.connect({ ip: '127.0.0.1', port: sock.address().port });
  await pt.consume({ producerId: inj.producerId, rtpCapabilities: router.rtpCapabilities });
  t.after(() => { inj.close(); pt.close(); sock.close(); });

  const packets = clipPackets();
  const clips = [new OpusClip(packets, 870), new OpusClip(packets.slice(0, 3), 55)];
  const info = await Promise.all(clips.map((c) => inj.enqueue(c)));
  const n = packets.length;
  const deadline = setTimeout(() => ev.emit('timeout'), 5000);
  while (got.length < n + 3) {
    const [why] = await Promise.race([once(ev, 'packet').then(() => ['packet']), once(ev, 'timeout').then(() => ['timeout'])]);
    assert.notEqual(why, 'timeout', `only ${got.length} of ${n + 3} packets arrived`);
  }
  clearTimeout(deadline);

  assert.deepEqual(got.slice(0, n).map((p) => p.payload), packets, 'payloads unchanged');
  assert.deepEqual(got.map((p) => p.marker), [true, ...Array(n - 1).fill(false), true, false, false]);
  assert.equal(got[0].timestamp, info[0].rtpTimestamp);
  assert.equal(got[n].timestamp, info[1].rtpTimestamp);
  assert.equal(info[0].durationMs, 870, "the tts event's durationMs is the speech's");
  const offsets = clips[0].offsets;
  for (let i = 0; i < n; i++) {
    assert.equal((got[i].timestamp - got[0].timestamp) >>> 0, offsets[i], `RTP offset of packet ${i}`);
  }
  assert.equal(offsets[7] - offsets[6], 1920, 'a 40 ms packet advances RTP time by 40 ms');
  const gap = ((info[1].rtpTimestamp - info[0].rtpTimestamp) >>> 0) / 48;
  assert.ok(gap >= 880 + 100, `second clip ${gap} ms after the first (880 ms of packets + 100 ms gap)`);
  // Pacing: arrival follows the offsets, anchored at the median (mediasoup may hold a new consumer's
  // first packet ~20 ms, and a loaded machine delays single packets: the typical one must be on time).
  const off = got.slice(0, n).map((p, k) => p.at - got[0].at - offsets[k] / 48);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const m = median(off);
  const dev = median(off.map((o) => Math.abs(o - m)));
  assert.ok(dev < 5, `median pacing error ${dev.toFixed(1)} ms (arrival - schedule: ${off.map((o) => o.toFixed(1)).join(' ')})`);
});
