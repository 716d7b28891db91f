'use strict';
// Media tests against a real mediasoup worker (MEDIASOUP_WORKER_BIN, or the path the infra build
// wrote to /tmp/speechload-worker-path.txt; skipped without one, failed under SPEECHLOAD_REQUIRE_ALL=1):
//   Injector → TTS producer → a PlainTransport consumer → UDP socket: RTP framing and pacing;
//   Injector → TTS producer → Tap → VAD: the tap decodes and segments what it is sent.
// Run: `npm test` in sut/gateway (`make test` runs it with SPEECHLOAD_REQUIRE_ALL=1).

const test = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('dgram');
const { needs, workerBin } = require('./prereq');

const BIN = workerBin();

const { parseRtp, isRtcp } = require('../src/rtp');
const { createMetrics } = require('../src/metrics');
const { nowMs } = require('../src/clock');

function tone(ms, amp = 6000) {
  const n = (48000 * ms) / 1000;
  const s = new Int16Array(n);
  for (let i = 0; i < n; i++) s[i] = Math.round(amp * Math.sin((2 * Math.PI * 300 * i) / 48000));
  return s;
}

/** Bounded wait for a condition re-checked on every `emitter` event. */
function until(emitter, event, cond, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, check);
      reject(new Error(`${what}: not within ${timeoutMs} ms`));
    }, timeoutMs);
    function check() {
      if (!cond()) return;
      clearTimeout(timer);
      emitter.removeListener(event, check);
      resolve();
    }
    emitter.on(event, check);
    check();
  });
}

test('media against a real mediasoup worker', needs(BIN, 'no mediasoup worker binary'), async (t) => {
  const mediasoup = require('mediasoup');
  const { Injector, warmUpOpus } = require('../src/inject');
  const { Tap } = require('../src/tap');
  const worker = await mediasoup.createWorker({ logLevel: 'error', rtcMinPort: 46000, rtcMaxPort: 46999 });
  t.after(() => worker.close());
  const router = await worker.createRouter({ mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }] });
  const metrics = createMetrics();
  warmUpOpus(); // as the server does at start

  await t.test('injector: marker, timestamps, >= 100 ms gap, real-time pacing', async () => {
    const inj = await Injector.create({ router, sourceProducerId: 'src', language: 'es', metrics, gapMs: 100 });
    const sock = dgram.createSocket('udp4');
    await new Promise((r) => sock.bind(0, '127.0.0.1', r));
    const packets = [];
    sock.on('message', (m) => {
      if (!isRtcp(m)) packets.push({ at: nowMs(), ...parseRtp(m) });
    });
    const pt = await router.createPlainTransport({ listenInfo: { protocol: 'udp', ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
    await pt.connect({ ip: '127.0.0.1', port: sock.address().port });
    await pt.consume({ producerId: inj.producerId, rtpCapabilities: router.rtpCapabilities });

    const first = await Promise.all([inj.enqueue(tone(1000)), inj.enqueue(tone(500))]);
    await until(sock, 'message', () => packets.length >= 75, 5000, '75 packets');
    inj.close();
    pt.close();
    sock.close();

    const i2 = packets.findIndex((p) => p.timestamp === first[1].rtpTimestamp);
    assert.equal(packets[0].timestamp, first[0].rtpTimestamp);
    assert.ok(packets[0].marker && packets[i2].marker, 'marker on each first packet');
    assert.equal(packets.filter((p) => p.marker).length, 2);
    assert.equal(i2, 50);
    for (let i = 1; i < packets.length; i++) {
      assert.equal((packets[i].sequenceNumber - packets[i - 1].sequenceNumber) & 0xffff, 1, 'contiguous seq');
      if (i !== i2) assert.equal((packets[i].timestamp - packets[i - 1].timestamp) >>> 0, 960, 'ts step');
    }
    const gapSamples = (first[1].rtpTimestamp - first[0].rtpTimestamp) >>> 0;
    assert.ok(gapSamples >= (1000 + 100) * 48, `second utterance ${gapSamples / 48} ms after the first`);
    assert.ok(first[1].queuedMs > 1000, 'second utterance waited for the first');
    // Pacing: arrival vs. each utterance's 20 ms grid, anchored at the median offset (mediasoup
    // holds the very first packet a new consumer gets for ~20 ms: that is not pacing).
    const dev = [];
    for (const [from, to] of [[0, i2], [i2, packets.length]]) {
      const off = packets.slice(from, to).map((p, k) => p.at - packets[from].at - 20 * k);
      const median = [...off].sort((a, b) => a - b)[Math.floor(off.length / 2)];
      dev.push(...off.map((o) => Math.abs(o - median)));
    }
    dev.sort((a, b) => a - b);
    const q = (f) => dev[Math.floor(f * (dev.length - 1))];
    console.log(`# pacing at a UDP receiver: |arrival - grid| p50 ${q(0.5).toFixed(2)} ms, p90 ${q(0.9).toFixed(2)} ms, max ${q(1).toFixed(2)} ms`);
    assert.ok(q(0.5) < 5, `median pacing error ${q(0.5)} ms`);
  });

  await t.test('tap: decodes and segments injected speech', async () => {
    const inj = await Injector.create({ router, sourceProducerId: 'src', language: 'es', metrics, gapMs: 100 });
    const utterances = [];
    const { EventEmitter } = require('events');
    const ev = new EventEmitter();
    const tap = await Tap.create({
      router,
      producer: inj.producer,
      vad: { thresholdDbfs: -50, hangoverMs: 200, maxUtteranceMs: 15000, prerollMs: 100 },
      metrics,
      onUtterance: (u) => { utterances.push(u); ev.emit('u'); },
    });
    const sent = await inj.enqueue(tone(600));
    await until(ev, 'u', () => utterances.length === 1, 3000, 'an utterance');
    tap.close();
    inj.close();
    const u = utterances[0];
    assert.ok(Math.abs(u.voicedMs - 600) <= 40, `voiced ${u.voicedMs} ms of a 600 ms tone`);
    assert.ok(u.speechStartMs >= sent.sentMs && u.speechStartMs - sent.sentMs < 20, 'starts at the first packet');
    assert.ok(Math.abs(u.speechEndMs - u.speechStartMs - 580) < 25, 'ends at the last voiced packet');
    assert.equal(u.reason, 'idle', 'the TTS producer goes silent: the idle timer closes the utterance');
    assert.equal(tap.stats.lost, 0);
  });
});
