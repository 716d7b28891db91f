'use strict';
// Pipeline ordering and error reporting, with the real Backends (HTTP) against a local HTTP server
// standing in for the three services (its latencies are chosen so utterance 2's STT finishes before
// utterance 1's) and the real Injector on a real mediasoup worker (skipped without one; failed
// without one under SPEECHLOAD_REQUIRE_ALL=1, see prereq.js).
// Run: `npm test` in sut/gateway (`make test` runs it with SPEECHLOAD_REQUIRE_ALL=1).

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('http');
const { needs, workerBin } = require('./prereq');
const { once } = require('events');

const BIN = workerBin();

const { Pipeline } = require('../src/pipeline');
const { Backends } = require('../src/backends');
const { GroundTruth } = require('../src/groundtruth');
const { createMetrics } = require('../src/metrics');
const { encodeWav } = require('../src/wav');

/** Services: STT answers by call order (delays and texts below), translation upper-cases, TTS 200 ms. */
function startServices(stt) {
  let calls = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url.startsWith('/transcribe')) {
        const { delayMs, text } = stt[calls++];
        setTimeout(() => res.end(JSON.stringify({ text })), delayMs);
      } else if (req.url === '/translate') {
        const { text } = JSON.parse(body);
        if (text === 'fail') {
          res.writeHead(503);
          res.end('translation engine overloaded');
          return;
        }
        res.end(JSON.stringify({ text: text.toUpperCase() }));
      } else {
        res.setHeader('content-type', 'audio/wav');
        res.end(encodeWav(new Int16Array(9600).fill(1000), 48000));
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function utterance(startMs) {
  return { speechStartMs: startMs, speechEndMs: startMs + 500, voicedMs: 500, audioMs: 600, audio: new Int16Array(28800), sampleRate: 48000, reason: 'hangover' };
}

async function run(t, { stt, reportErrors, count }) {
  const mediasoup = require('mediasoup');
  const { Injector } = require('../src/inject');
  const server = await startServices(stt);
  const worker = await mediasoup.createWorker({ logLevel: 'error', rtcMinPort: 46000, rtcMaxPort: 46999 });
  t.after(() => { worker.close(); server.close(); });
  const router = await worker.createRouter({ mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }] });
  const metrics = createMetrics();
  const injector = await Injector.create({ router, sourceProducerId: 'mic', language: 'es', metrics, gapMs: 100 });
  const base = `http://127.0.0.1:${server.address().port}`;
  const events = [];
  const done = new (require('events').EventEmitter)();
  const pipeline = new Pipeline({
    producerId: 'mic', peerId: 'speaker', sourceLanguage: 'en', outputs: new Map([['es', injector]]),
    backends: new Backends({ services: { stt: base, translation: base, tts: base }, timeoutMs: 2000, metrics }),
    emit: (name, payload) => {
      events.push({ name, ...payload });
      if (name === 'tts' || name === 'pipelineError') done.emit('end');
    },
    groundTruth: new GroundTruth(null),
    metrics,
    reportErrors,
  });
  for (let i = 0; i < stt.length; i++) pipeline.onUtterance(utterance(1000 * i));
  const timer = setTimeout(() => done.emit('timeout'), 5000);
  while (events.filter((e) => e.name === 'tts' || e.name === 'pipelineError').length < count) {
    const [why] = await Promise.race([once(done, 'end').then(() => ['end']), once(done, 'timeout').then(() => ['timeout'])]);
    assert.notEqual(why, 'timeout', `pipeline did not finish: ${JSON.stringify(events)}`);
  }
  clearTimeout(timer);
  injector.close();
  return { events, metrics };
}

test('pipeline: per-stage order kept when a later STT answers first; errors in order', needs(BIN, 'no mediasoup worker'), async (t) => {
  const { events } = await run(t, {
    stt: [{ delayMs: 300, text: 'one' }, { delayMs: 10, text: 'fail' }, { delayMs: 10, text: '' }, { delayMs: 10, text: 'four' }],
    reportErrors: true,
    count: 4,
  });
  const seqs = (name) => events.filter((e) => e.name === name).map((e) => e.seq);
  assert.deepEqual(seqs('transcription'), [1, 2, 4]);
  assert.deepEqual(seqs('translation'), [1, 4]);
  assert.deepEqual(seqs('tts'), [1, 4]);
  // Order holds per stage: utterance 3's STT error may come before utterance 2's translation error.
  const errors = events.filter((e) => e.name === 'pipelineError').map((e) => [e.seq, e.stage, e.error])
    .sort((a, b) => a[0] - b[0]);
  assert.equal(errors.length, 2);
  assert.deepEqual(errors[0].slice(0, 2), [2, 'translation']);
  assert.match(errors[0][2], /HTTP 503: translation engine overloaded/);
  assert.deepEqual(errors[1], [3, 'stt', 'empty transcript']);
  // Each stage's outcomes come out in utterance order, even though utterance 2's STT answered first.
  const order = events.map((e) => `${e.name}:${e.seq}`);
  assert.ok(order.indexOf('transcription:1') < order.indexOf('transcription:2'), order.join(' '));
  assert.ok(order.indexOf('translation:1') < order.indexOf('pipelineError:2'), order.join(' '));
  const [tts1, tts4] = events.filter((e) => e.name === 'tts');
  assert.equal(tts1.durationMs, 200);
  assert.ok(((tts4.rtpTimestamp - tts1.rtpTimestamp) >>> 0) >= (200 + 100) * 48, 'TTS audio does not overlap');
  assert.equal(events.find((e) => e.name === 'translation').text, 'ONE');
  // A translation or TTS failure names its target language; an STT failure has none.
  const failed = (stage) => events.find((e) => e.name === 'pipelineError' && e.stage === stage);
  assert.equal(failed('translation').targetLanguage, 'es');
  assert.equal('targetLanguage' in failed('stt'), false);
  assert.deepEqual(events.filter((e) => e.name === 'tts').map((e) => e.language), ['es', 'es']);
  // An error names its speaker's producer and carries its utterance's speech span, as a transcription
  // does (same clock and units): utterance n spoke from 1000·(n−1) ms for 500 ms (utterance() above).
  for (const e of events.filter((x) => x.name === 'pipelineError' || x.name === 'transcription')) {
    assert.equal(e.producerId, 'mic', `${e.name}:${e.seq}`);
    assert.deepEqual([e.speechStartTs, e.speechEndTs], [1000 * (e.seq - 1), 1000 * (e.seq - 1) + 500],
      `${e.name}:${e.seq}`);
  }
  assert.deepEqual([failed('stt').speechStartTs, failed('stt').speechEndTs], [2000, 2500]);
  assert.deepEqual([failed('translation').speechStartTs, failed('translation').speechEndTs], [1000, 1500]);
});

test('pipeline: reportErrors false keeps failures off the wire', needs(BIN, 'no mediasoup worker'), async (t) => {
  const { events, metrics } = await run(t, {
    stt: [{ delayMs: 10, text: '' }, { delayMs: 10, text: 'two' }],
    reportErrors: false,
    count: 1,
  });
  assert.deepEqual(events.map((e) => `${e.name}:${e.seq}`), ['transcription:2', 'translation:2', 'tts:2']);
  assert.match(metrics.registry.render(), /gateway_stage_results_total\{result="error",stage="stt"\} 1/);
});
