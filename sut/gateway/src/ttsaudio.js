'use strict';
// Synthesized speech as the injector plays it: a clip of Opus packets with their RTP offsets.
//   * OpusClip: the TTS service's Ogg Opus answer (RFC 7845), demuxed; its packets go out as they
//     are, so the gateway keeps no encoder (the default: the gateway asks for format "ogg_opus").
//   * PcmClip: a WAV answer (a TTS that ignores the format asked for), encoded here frame by frame
//     as it plays, by an encoder of its own that exists only while the clip plays (free()).
// Both: frames (packet count), packet(i), offset(i) (48 kHz samples from the clip's start),
// totalSamples, durationMs (the speech's own duration), free().

const { OpusEncoder, packetSamples } = require('./opus');
const { decodeWav, resampleLinear } = require('./wav');
const { logger } = require('./logger');

const log = logger('ttsaudio');
const SAMPLE_RATE = 48000;
const FRAME_SAMPLES = 960; // 20 ms
const BITRATE = 32000; // asked of the TTS service, and used for WAV answers
const COMPLEXITY = 5; // speech quality is plenty; CPU is shared

/**
 * Ogg pages → the logical stream's packets (RFC 3533: a packet spans segments of 255 bytes until
 * one is shorter, possibly across pages), then the Opus mapping (RFC 7845): OpusHead, OpusTags,
 * audio packets. Returns {channels, preSkip, packets, granule (last page's, -1 if none)}.
 */
function parseOggOpus(buf) {
  const packets = [];
  let partial = [];
  let granule = -1;
  let offset = 0;
  let serial = null;
  while (offset < buf.length) {
    if (offset + 27 > buf.length || buf.toString('latin1', offset, offset + 4) !== 'OggS') {
      throw new Error(`Ogg: no page at byte ${offset} of ${buf.length}`);
    }
    const pageSerial = buf.readUInt32LE(offset + 14);
    if (serial === null) serial = pageSerial;
    const segments = buf[offset + 26];
    const table = offset + 27;
    let body = table + segments;
    if (body > buf.length) throw new Error('Ogg: truncated page header');
    const pageGranule = Number(buf.readBigInt64LE(offset + 6));
    for (let i = 0; i < segments; i++) {
      const len = buf[table + i];
      if (body + len > buf.length) throw new Error('Ogg: truncated page');
      if (pageSerial === serial) partial.push(buf.subarray(body, body + len));
      body += len;
      if (len < 255 && pageSerial === serial) {
        packets.push(partial.length === 1 ? partial[0] : Buffer.concat(partial));
        partial = [];
      }
    }
    if (pageSerial === serial && pageGranule >= 0) granule = pageGranule;
    offset = body;
  }
  const head = packets[0];
  if (!head || head.length < 19 || head.toString('latin1', 0, 8) !== 'OpusHead') throw new Error('Ogg: not an Opus stream (no OpusHead)');
  if (!packets[1] || packets[1].toString('latin1', 0, 8) !== 'OpusTags') throw new Error('Ogg Opus: no OpusTags packet');
  return { channels: head[9], preSkip: head.readUInt16LE(10), packets: packets.slice(2), granule };
}

class OpusClip {
  /** @param {Buffer[]} packets Opus packets, in order; durationMs the speech's duration (or null) */
  constructor(packets, durationMs = null) {
    this.packets = packets.filter((p) => p.length > 0);
    this.offsets = new Array(this.packets.length);
    let total = 0;
    for (let i = 0; i < this.packets.length; i++) {
      this.offsets[i] = total;
      const n = packetSamples(this.packets[i]);
      if (n === 0) throw new Error(`TTS audio: packet ${i} is not a valid Opus packet`);
      total += n;
    }
    this.totalSamples = total;
    this.durationMs = Number.isFinite(durationMs) ? durationMs : (total * 1000) / SAMPLE_RATE;
  }

  static fromOgg(buf, durationMs = null) {
    const ogg = parseOggOpus(buf);
    // Without the service's figure: the last granule position minus the encoder's pre-skip.
    const fromGranule = ogg.granule > ogg.preSkip ? ((ogg.granule - ogg.preSkip) * 1000) / SAMPLE_RATE : null;
    return new OpusClip(ogg.packets, Number.isFinite(durationMs) ? durationMs : fromGranule);
  }

  get frames() { return this.packets.length; }

  packet(i) { return this.packets[i]; }

  offset(i) { return this.offsets[i]; }

  free() {}
}

class PcmClip {
  /** @param {Int16Array} samples 48 kHz mono */
  constructor(samples) {
    this.samples = samples;
    this.encoder = null; // created by the first packet(), freed by free(): alive only while playing
    this.frames = Math.max(1, Math.ceil(samples.length / FRAME_SAMPLES));
    this.totalSamples = this.frames * FRAME_SAMPLES;
    this.durationMs = (samples.length * 1000) / SAMPLE_RATE;
  }

  packet(i) {
    let frame = this.samples.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES);
    if (frame.length < FRAME_SAMPLES) {
      const padded = new Int16Array(FRAME_SAMPLES);
      padded.set(frame);
      frame = padded;
    }
    if (this.encoder === null) this.encoder = new OpusEncoder({ bitrate: BITRATE, complexity: COMPLEXITY });
    return this.encoder.encode(frame, FRAME_SAMPLES);
  }

  offset(i) { return i * FRAME_SAMPLES; }

  free() {
    if (this.encoder) this.encoder.free();
    this.encoder = null;
  }
}

/**
 * The TTS service's answer ({body, contentType, durationMs}) → a clip. Ogg Opus is what the gateway
 * asks for; a WAV answer is accepted too (decoded, resampled to 48 kHz if needed, encoded as it plays).
 */
function clipFromTts({ body, contentType, durationMs }) {
  const type = (contentType || '').split(';')[0].trim().toLowerCase();
  if (type === 'audio/ogg' || type === 'audio/opus') {
    const clip = OpusClip.fromOgg(body, durationMs);
    if (clip.frames === 0) throw new Error('TTS returned no audio');
    return clip;
  }
  if (type === 'audio/wav' || type === 'audio/x-wav' || type === 'audio/wave' || type === '') {
    const { sampleRate, samples } = decodeWav(body);
    if (samples.length === 0) throw new Error('TTS returned no audio');
    if (sampleRate !== SAMPLE_RATE) log.warn(`TTS answered ${sampleRate} Hz, not the ${SAMPLE_RATE} Hz asked for: resampling`);
    return new PcmClip(resampleLinear(samples, sampleRate, SAMPLE_RATE));
  }
  throw new Error(`TTS answered content-type ${JSON.stringify(contentType)} (expected audio/ogg or audio/wav)`);
}

module.exports = { parseOggOpus, OpusClip, PcmClip, clipFromTts, BITRATE };
