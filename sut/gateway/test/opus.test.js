'use strict';
// The gateway's codec pieces without a mediasoup worker: the Opus binding (opus.js), the tap's
// keep-the-payloads / decode-at-utterance-end path (vad.js units, segment.js, tap.js), and the TTS
// clips the injector packetizes (ttsaudio.js). Run: `npm test` in sut/gateway.

const test = require('node:test');
const assert = require('node:assert/strict');
const { OpusDecoder, OpusEncoder, packetSamples, heapBytes } = require('../src/opus');
const { decodeSegment } = require('../src/segment');
const { Vad, rmsDbfs } = require('../src/vad');
const { Tap } = require('../src/tap');
const { parseOggOpus, OpusClip, PcmClip, clipFromTts } = require('../src/ttsaudio');
const { encodeWav, decodeWav } = require('../src/wav');
const { createMetrics } = require('../src/metrics');

function tone(n, amp = 8000, phase = 0) {
  const s = new Int16Array(n);
  for (let i = 0; i < n; i++) s[i] = Math.round(amp * Math.sin((phase + i) * 0.06));
  return s;
}

/** `count` 20 ms packets of a continuous tone (or silence when amp is 0), one encoder. */
function packets(count, amp = 8000) {
  const enc = new OpusEncoder();
  try {
    return Array.from({ length: count }, (_, k) => enc.encode(tone(960, amp, k * 960), 960));
  } finally {
    enc.free();
  }
}

const rms = (s) => rmsDbfs(s);

test('opus: round trip keeps the level; TOC durations; no instance limit, freed instances do not grow the heap', () => {
  const enc = new OpusEncoder();
  const dec = new OpusDecoder();
  let last;
  for (let k = 0; k < 10; k++) last = dec.decode(enc.encode(tone(960, 8000, k * 960), 960));
  assert.equal(last.length, 960);
  assert.ok(Math.abs(rms(last) - rms(tone(960, 8000))) < 1.5, `decoded ${rms(last)} dBFS`);
  enc.free();
  dec.free();

  // TOC: SILK 10/20/40/60 ms, hybrid 10/20, CELT 2.5..20; code 1/2: two frames; code 3: count byte.
  assert.equal(packetSamples(Buffer.from([0 << 3])), 480);
  assert.equal(packetSamples(Buffer.from([3 << 3])), 2880);
  assert.equal(packetSamples(Buffer.from([(15 << 3) | 0])), 960);
  assert.equal(packetSamples(Buffer.from([(16 << 3) | 1])), 240);
  assert.equal(packetSamples(Buffer.from([(31 << 3) | 2])), 1920);
  assert.equal(packetSamples(Buffer.from([(31 << 3) | 3, 3])), 2880);
  assert.equal(packetSamples(Buffer.from([(31 << 3) | 3, 7])), 0, '140 ms is more than a packet holds');
  assert.equal(packetSamples(Buffer.alloc(0)), 0);

  // The old wrapper broke past ~78 instances: 300 callers' worth of decoders and encoders work at once.
  const pk = packets(1)[0];
  const many = Array.from({ length: 300 }, (_, i) => (i % 2 ? new OpusDecoder() : new OpusEncoder()));
  for (const c of many) {
    if (c instanceof OpusDecoder) assert.equal(c.decode(pk).length, 960);
    else assert.ok(c.encode(tone(960), 960).length > 0);
  }
  many.forEach((c) => c.free());
  const before = heapBytes();
  for (let i = 0; i < 2000; i++) new OpusDecoder().free();
  assert.equal(heapBytes(), before, 'create/free cycles reuse the heap');
});

test('segment: decoded at the end, lost packets silent, exact length, slicing changes nothing', async () => {
  const pk = packets(12);
  const chunks = pk.map((media) => ({ n: 960, media }));
  chunks[5] = { n: 960, media: null }; // lost
  chunks[7] = { n: 960, media: Buffer.from([0xff, 0xff, 0xff]) }; // undecodable
  const errors = [];
  let decoded = 0;
  const whole = await decodeSegment(chunks, { onError: (e) => errors.push(e.message), onDecoded: (n) => { decoded = n; } });
  assert.equal(whole.length, 12 * 320, "STT's rate: 16 kHz");
  assert.ok(whole.subarray(5 * 320, 6 * 320).every((v) => v === 0), 'a lost packet is silence');
  assert.equal(errors.length, 1);
  assert.equal(decoded, 10);
  assert.ok(rms(whole.subarray(3 * 320, 4 * 320)) > -20, 'the tone is there');
  // One decoder from the first packet: the same samples as a streaming decoder that saw the same packets.
  const ref = new OpusDecoder(16000, 1);
  const first = ref.decode(pk[0]);
  ref.free();
  assert.deepEqual(whole.subarray(0, 320), first);
  const sliced = await decodeSegment(chunks, { slicePackets: 2 });
  assert.deepEqual(sliced, whole);
  const full = await decodeSegment(chunks, { sampleRate: 48000 });
  assert.equal(full.length, 12 * 960);
  assert.ok(Math.abs(rms(full.subarray(3 * 960, 4 * 960)) - rms(whole.subarray(3 * 320, 4 * 320))) < 1, 'same level');
  // Decoded in place inside the STT request's WAV: encodeWav() hands it out without a copy.
  const wav = encodeWav(whole, 16000);
  assert.equal(wav.buffer, whole.buffer);
  assert.deepEqual(decodeWav(wav), { sampleRate: 16000, samples: whole });
});

test('VAD units (audio-level path): preroll and utterance kept as payloads, bounded, assembled at the end', () => {
  const got = [];
  const assembled = [];
  const vad = new Vad({
    thresholdDbfs: -50, hangoverMs: 100, maxUtteranceMs: 400, prerollMs: 60,
    onUtterance: (u) => got.push(u),
    assemble: (chunks) => { assembled.push(chunks); return 'audio'; },
  });
  let t = 0;
  const unit = (voiced, media) => { vad.unit(960, t, voiced, media); t += 20; };
  for (let i = 0; i < 500; i++) unit(false, `s${i}`);
  assert.ok(vad.preroll.length <= 4 && vad.prerollLen < vad.prerollSamples + 960, 'preroll stays bounded');
  for (let i = 0; i < 10; i++) unit(true, `v${i}`);
  for (let i = 0; i < 5; i++) unit(false, `h${i}`);
  assert.equal(got.length, 1);
  assert.equal(got[0].audio, 'audio');
  assert.equal(got[0].audioMs, 20 * (3 + 10 + 5));
  assert.equal(got[0].voicedMs, 200);
  assert.deepEqual(assembled[0].map((c) => c.media).slice(0, 4), ['s497', 's498', 's499', 'v0']);
  // maxUtteranceMs bounds what one utterance keeps.
  for (let i = 0; i < 100; i++) unit(true, `x${i}`);
  assert.ok(got.slice(1).every((u) => u.reason === 'max' && u.audioMs <= 400 + 60));
  assert.equal(got.length, 1 + 5);
  assert.ok(vad.utt === null || vad.utt.chunks.length <= 400 / 20);
});

/** An RTP packet with the one-byte ssrc-audio-level extension (id 1) unless level is null. */
function rtp(seq, payload, level) {
  const ext = level === null ? Buffer.alloc(0) : Buffer.from([0xbe, 0xde, 0, 1, 0x10, level & 0x7f, 0, 0]);
  const h = Buffer.alloc(12);
  h[0] = 0x80 | (level === null ? 0 : 0x10);
  h[1] = 100;
  h.writeUInt16BE(seq & 0xffff, 2);
  h.writeUInt32BE(seq * 960, 4);
  h.writeUInt32BE(1234, 8);
  return Buffer.concat([h, ext, payload]);
}

function levelTap(onUtterance, metrics) {
  const tap = new Tap({ id: 'mic' }, {
    source: 'audio-level', thresholdDbfs: -50, levelThresholdDbov: -45, hangoverMs: 100, maxUtteranceMs: 15000, prerollMs: 40,
  }, metrics, onUtterance);
  // What _open() finds on a real consumer (media.test.js covers that part with mediasoup).
  tap.audioLevelId = 1;
  tap.levelMode = true;
  return tap;
}

test('tap, audio-level VAD: no decoding until the utterance ends; lost packets are silence; header-less packets use energy', async () => {
  const metrics = createMetrics();
  const utterances = [];
  const tap = levelTap((u) => utterances.push(u), metrics);
  const silence = packets(10, 0);
  const voice = packets(10);
  let seq = 100;
  let t = 0;
  const send = (payload, level) => { tap._onPacket(rtp(seq++, payload, level), t); t += 20; };
  for (const p of silence) send(p, 127);
  for (let i = 0; i < 10; i++) {
    if (i === 4) { seq += 1; continue; } // lost at the tap
    send(voice[i], 20);
  }
  assert.equal(tap.stats.decoded, 0, 'nothing decoded while the utterance runs');
  for (const p of silence.slice(0, 5)) send(p, 127);
  assert.equal(utterances.length, 1);
  const u = utterances[0];
  const audio = await u.audio;
  assert.equal(u.sampleRate, 16000);
  assert.equal(audio.length, (2 + 10 + 5) * 320); // preroll 40 ms + voice (the lost one too) + hangover
  assert.equal(u.audioMs, audio.length / 16);
  assert.equal(tap.stats.decoded, 2 + 9 + 5, 'each kept packet decoded once, at the end');
  assert.equal(tap.stats.lost, 1);
  const lost = audio.subarray((2 + 4) * 320, (2 + 5) * 320);
  assert.ok(lost.every((v) => v === 0), 'the lost packet is silence in the WAV');
  assert.ok(rms(audio.subarray((2 + 6) * 320, (2 + 7) * 320)) > -25, 'voice decoded');

  // A voiced packet without the header: decoded on its own, its energy starts an utterance.
  const before = tap.stats.decoded;
  send(voice[0], null);
  assert.equal(tap.stats.decoded, before + 1);
  assert.equal(tap.vad.inSpeech, true);
  tap.close();
  assert.equal(metrics.tapDecoded.lines().join('\n').includes(`${tap.stats.decoded}`), true);
});

test('tap, energy VAD: every packet decoded as it arrives', async () => {
  const metrics = createMetrics();
  const utterances = [];
  const tap = new Tap({ id: 'mic' }, { source: 'energy', thresholdDbfs: -50, hangoverMs: 100, maxUtteranceMs: 15000, prerollMs: 0 },
    metrics, (u) => utterances.push(u));
  let seq = 0;
  for (const p of [...packets(3, 0), ...packets(5), ...packets(6, 0)]) tap._onPacket(rtp(seq++, p, null), seq * 20);
  assert.equal(tap.stats.decoded, 14);
  assert.equal(utterances.length, 1);
  // 48 kHz: voice + hangover, and the codec's 6.5 ms delay can carry the tone into one more packet.
  assert.ok([10, 11].includes((await utterances[0].audio).length / 960));
  assert.equal(utterances[0].sampleRate, 48000);
  tap.close();
});

/** A minimal Ogg muxer (CRC left 0: the gateway does not check it), `perPage` lacing values a page. */
function ogg(packetsIn, { granule = 0, perPage = 255 } = {}) {
  const lacing = [];
  for (const p of packetsIn) {
    for (let off = 0; ; off += 255) {
      const len = Math.min(255, p.length - off);
      lacing.push({ bytes: p.subarray(off, off + len), len });
      if (len < 255) break;
    }
  }
  const pages = [];
  for (let i = 0, seq = 0; i < lacing.length; i += perPage, seq++) {
    const segs = lacing.slice(i, i + perPage);
    const h = Buffer.alloc(27 + segs.length);
    h.write('OggS', 0, 'latin1');
    h.writeBigInt64LE(BigInt(i + perPage >= lacing.length ? granule : -1), 6);
    h.writeUInt32LE(77, 14);
    h.writeUInt32LE(seq, 18);
    h[26] = segs.length;
    segs.forEach((s, k) => { h[27 + k] = s.len; });
    pages.push(h, ...segs.map((s) => s.bytes));
  }
  return Buffer.concat(pages);
}

function opusHead(preSkip) {
  const h = Buffer.alloc(19);
  h.write('OpusHead', 0, 'latin1');
  h[8] = 1;
  h[9] = 1;
  h.writeUInt16LE(preSkip, 10);
  h.writeUInt32LE(48000, 12);
  return h;
}

test('TTS clips: Ogg Opus demuxed (packets across pages), offsets follow each packet, durations', () => {
  const audio = packets(5);
  const big = Buffer.concat([Buffer.from([(31 << 3) | 1]), Buffer.alloc(600, 7)]); // 2 × 20 ms, 601 bytes
  const body = ogg([opusHead(312), Buffer.from('OpusTags\0\0\0\0\0\0\0\0'), ...audio, big], { granule: 7 * 960, perPage: 3 });
  const parsed = parseOggOpus(body);
  assert.equal(parsed.preSkip, 312);
  assert.equal(parsed.packets.length, 6);
  assert.deepEqual(parsed.packets.slice(0, 5), audio);
  assert.deepEqual(parsed.packets[5], big, 'a packet spanning pages is joined');

  const clip = clipFromTts({ body, contentType: 'audio/ogg; codecs=opus', durationMs: 123.4 });
  assert.ok(clip instanceof OpusClip);
  assert.equal(clip.frames, 6);
  assert.deepEqual([0, 1, 5].map((i) => clip.offset(i)), [0, 960, 4800]);
  assert.equal(clip.totalSamples, 7 * 960);
  assert.equal(clip.durationMs, 123.4, "the service's own duration");
  assert.equal(OpusClip.fromOgg(body).durationMs, (7 * 960 - 312) / 48, 'else the granule minus the pre-skip');
  assert.deepEqual(clip.packet(2), audio[2], 'packets go out as they came');
  assert.throws(() => parseOggOpus(Buffer.from('RIFF....')), /no page/);
  assert.throws(() => clipFromTts({ body, contentType: 'text/plain' }), /content-type/);
});

test('TTS clips: a WAV answer is encoded as it plays by an encoder of its own, freed after', () => {
  const clip = clipFromTts({ body: encodeWav(tone(2000), 48000), contentType: 'audio/wav' });
  assert.ok(clip instanceof PcmClip);
  assert.equal(clip.frames, 3);
  assert.equal(clip.offset(2), 1920);
  assert.equal(clip.encoder, null, 'no encoder until it plays');
  const pk = [0, 1, 2].map((i) => clip.packet(i));
  assert.ok(pk.every((p) => packetSamples(p) === 960));
  clip.free();
  assert.equal(clip.encoder, null);
});
