'use strict';
// Translated speech per target language, at the Room: a real mediasoup worker (skipped without one;
// failed without one under SPEECHLOAD_REQUIRE_ALL=1, see prereq.js), real Injectors, Tap and Pipeline;
// the mic is a PlainTransport producer, the Socket.IO room and the three services are stand-ins
// (the services answer at once: translation prefixes the language, TTS is 100 ms of tone).
// Run: `npm test` in sut/gateway.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter, once } = require('events');
const { needs, workerBin } = require('./prereq');

const BIN = workerBin();

const { Room, Peer } = require('../src/room');
const { RoomDirectory } = require('../src/directory');
const { buildConfig } = require('../src/config');
const { createMetrics } = require('../src/metrics');
const { GroundTruth } = require('../src/groundtruth');
const { encodeWav } = require('../src/wav');

/** The Socket.IO server as the room uses it: every broadcast is recorded (and signalled). */
class FakeIo extends EventEmitter {
  constructor() {
    super();
    this.events = [];
  }

  record(name, payload, except) {
    this.events.push({ name, payload, except });
    this.emit('event');
  }

  to() {
    return { emit: (name, payload) => this.record(name, payload, null) };
  }

  socket(id) {
    return { id, join() {}, leave() {}, to: () => ({ emit: (name, payload) => this.record(name, payload, id) }) };
  }

  named(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.payload);
  }

  /** Wait (bounded) until `cond()` holds, re-checked on every broadcast. */
  async until(cond, what, ms = 5000) {
    const timer = setTimeout(() => this.emit('timeout'), ms);
    try {
      while (!cond()) {
        const [why] = await Promise.race([once(this, 'event').then(() => ['event']), once(this, 'timeout').then(() => ['timeout'])]);
        assert.notEqual(why, 'timeout', `${what}: not within ${ms} ms; events: ${this.events.map((e) => e.name).join(' ')}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

const backends = {
  transcribe: async () => 'hello world',
  translate: async (text, source, target) => `${target}:${text}`,
  synthesize: async () => ({ body: encodeWav(new Int16Array(4800).fill(1000), 48000), contentType: 'audio/wav', durationMs: 100 }),
};

function utterance(startMs) {
  return { speechStartMs: startMs, speechEndMs: startMs + 500, voicedMs: 500, audioMs: 600, audio: new Int16Array(28800), sampleRate: 48000, reason: 'hangover' };
}

async function setUp(t) {
  const mediasoup = require('mediasoup');
  const worker = await mediasoup.createWorker({ logLevel: 'error', rtcMinPort: 44000, rtcMaxPort: 44999 });
  t.after(() => worker.close());
  const io = new FakeIo();
  const room = await Room.create('r1', worker, {
    io,
    config: buildConfig({}).config,
    backends,
    groundTruth: new GroundTruth(null),
    metrics: createMetrics(),
    directory: new RoomDirectory(null),
    pipes: null,
  });
  t.after(() => room.close());
  return { io, room };
}

function join(room, io, id, role, sourceLanguage, targetLanguage) {
  const peer = new Peer({ id, socket: io.socket(id), role, sourceLanguage, targetLanguage });
  room.addPeer(peer);
  return peer;
}

/** The speaker's mic: a producer on a PlainTransport, through Room.produce as a client's would go. */
async function produce(room, speaker) {
  const transport = await room.router.createPlainTransport({
    listenInfo: { protocol: 'udp', ip: '127.0.0.1' }, rtcpMux: true, comedia: true, appData: { direction: 'send' },
  });
  speaker.transports.set(transport.id, transport);
  const rtpParameters = {
    codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }],
    encodings: [{ ssrc: 4242 }],
  };
  const { id } = await room.produce(speaker, { transportId: transport.id, kind: 'audio', rtpParameters });
  return id;
}

const ttsInfos = (room) => room.producerInfos().filter((p) => p.appData.type === 'tts');

test('room: a TTS producer per target language wanted', needs(BIN, 'no mediasoup worker'), async (t) => {
  await t.test('two listeners, two languages: two TTS producers; one transcription, two translations and tts', async (tt) => {
    const { io, room } = await setUp(tt);
    const speaker = join(room, io, 'spk', 'speaker', 'en', 'es');
    join(room, io, 'l1', 'listener', 'en', 'es');
    join(room, io, 'l2', 'listener', 'en', 'fr');
    const mic = await produce(room, speaker);

    const tts = ttsInfos(room);
    assert.deepEqual(tts.map((p) => p.appData.language).sort(), ['es', 'fr']);
    for (const p of tts) assert.deepEqual(p.appData, { type: 'tts', sourceProducerId: mic, language: p.appData.language });
    const announced = io.named('newProducer');
    assert.deepEqual(announced.map((p) => p.appData.type).sort(), ['mic', 'tts', 'tts']);
    assert.equal(room.producerCount, 3);

    room.sessions.get(mic).pipeline.onUtterance(utterance(1000));
    await io.until(() => io.named('tts').length === 2, 'two tts events');
    assert.equal(io.named('transcription').length, 1);
    const translations = io.named('translation');
    assert.deepEqual(translations.map((e) => [e.targetLanguage, e.text]).sort(), [['es', 'es:hello world'], ['fr', 'fr:hello world']]);
    const byLanguage = Object.fromEntries(tts.map((p) => [p.appData.language, p.id]));
    for (const e of io.named('tts')) {
      assert.equal(e.ttsProducerId, byLanguage[e.language], `the ${e.language} audio plays on the ${e.language} producer`);
      assert.equal(e.utteranceId, translations[0].utteranceId);
    }
    assert.deepEqual(room.sessionStats()[0].inject.utterances, 2);
  });

  await t.test('a listener joining later with a new language adds a producer; the same language adds none', async (tt) => {
    const { io, room } = await setUp(tt);
    const speaker = join(room, io, 'spk', 'speaker', 'en', 'es');
    join(room, io, 'l1', 'listener', 'en', 'es');
    const mic = await produce(room, speaker);
    assert.deepEqual(ttsInfos(room).map((p) => p.appData.language), ['es']);

    // As signaling.js does for a joining listener.
    join(room, io, 'l2', 'listener', 'en', 'es');
    await room.serveLanguages();
    join(room, io, 'l3', 'listener', 'en', 'en'); // the mic's own language: nothing to translate
    await room.serveLanguages();
    assert.equal(ttsInfos(room).length, 1, 'a same-language listener adds no producer');
    assert.equal(io.named('newProducer').length, 2);

    join(room, io, 'l4', 'listener', 'en', 'de');
    await room.serveLanguages();
    const tts = ttsInfos(room);
    assert.deepEqual(tts.map((p) => p.appData.language).sort(), ['de', 'es']);
    const added = io.named('newProducer').slice(2);
    assert.equal(added.length, 1);
    assert.deepEqual(added[0].appData, { type: 'tts', sourceProducerId: mic, language: 'de' });
    assert.equal(added[0].id, tts.find((p) => p.appData.language === 'de').id);
    assert.equal(added[0].peerId, 'spk');

    room.sessions.get(mic).pipeline.onUtterance(utterance(1000));
    await io.until(() => io.named('tts').length === 2, 'two tts events');
    assert.deepEqual(io.named('translation').map((e) => e.targetLanguage).sort(), ['de', 'es']);
    assert.deepEqual(io.named('tts').map((e) => e.language).sort(), ['de', 'es']);

    // The mic closes: its producer and both TTS producers are announced closed.
    speaker.producers.get(mic).close();
    const closed = io.named('producerClosed').map((e) => e.id).sort();
    assert.deepEqual(closed, [mic, ...tts.map((p) => p.id)].sort());
    assert.equal(room.producerCount, 0);
  });

  await t.test('a mic whose speaker wants its own language, no listener: transcripts only', async (tt) => {
    const { io, room } = await setUp(tt);
    const speaker = join(room, io, 'spk', 'speaker', 'es', 'es');
    const mic = await produce(room, speaker);
    assert.equal(ttsInfos(room).length, 0);
    room.sessions.get(mic).pipeline.onUtterance(utterance(1000));
    await io.until(() => io.named('transcription').length === 1, 'the transcript');
    // Two-way: a listener wanting en makes the Spanish mic translated es→en from the next utterance on.
    join(room, io, 'l1', 'listener', 'en', 'en');
    await room.serveLanguages();
    room.sessions.get(mic).pipeline.onUtterance(utterance(3000));
    await io.until(() => io.named('tts').length === 1, 'the English tts');
    assert.deepEqual(io.named('translation').map((e) => [e.sourceLanguage, e.targetLanguage, e.seq]), [['es', 'en', 2]]);
    assert.equal(io.named('tts')[0].language, 'en');
  });
});
