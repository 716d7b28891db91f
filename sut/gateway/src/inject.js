'use strict';
// The TTS return path for one mic producer: a PlainTransport (comedia: mediasoup learns our
// address from the first packet) with an Opus Producer, fed by a local UDP socket at real-time
// pace. Utterances play back to back in enqueue order, separated by at least gapMs of nothing
// (the producer sends no packets between utterances).

const crypto = require('crypto');
const dgram = require('dgram');
const OpusScript = require('opusscript');
const { buildRtp } = require('./rtp');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('inject');
const SAMPLE_RATE = 48000;
const FRAME_SAMPLES = 960; // 20 ms
const FRAME_MS = 20;
const PAYLOAD_TYPE = 100;
const OPUS_SET_COMPLEXITY = 4010;
const SEND_EARLY_TOLERANCE_MS = 0.5; // a packet due within this is sent now instead of re-arming a timer

class Injector {
  /**
   * @param {object} o router, sourceProducerId, language, metrics, gapMs
   */
  static async create(o) {
    const inj = new Injector(o);
    try {
      await inj._open(o.router);
    } catch (err) {
      inj.close();
      throw err;
    }
    return inj;
  }

  constructor({ sourceProducerId, language, metrics, gapMs }) {
    this.sourceProducerId = sourceProducerId;
    this.language = language;
    this.metrics = metrics;
    this.gapMs = gapMs;
    this.closed = false;
    this.socket = null;
    this.transport = null;
    this.producer = null;
    // Mono encode: the codec is opus/48000/2 (as every Opus SDP says) but a mono stream is valid
    // in it, and half the encoding cost.
    this.encoder = new OpusScript(SAMPLE_RATE, 1, OpusScript.Application.VOIP);
    this.encoder.setBitrate(32000);
    this.encoder.encoderCTL(OPUS_SET_COMPLEXITY, 5); // speech quality is plenty; CPU is shared
    this.ssrc = crypto.randomBytes(4).readUInt32BE(0);
    this.seq = crypto.randomBytes(2).readUInt16BE(0);
    this.clockZeroMs = nowMs();
    this.tsBase = crypto.randomBytes(4).readUInt32BE(0);
    this.lastTs = null;
    this.queue = []; // pending {samples, resolve, reject}
    this.current = null; // the utterance being sent
    this.nextFreeMs = 0; // earliest start of the next utterance (end of the previous + gap)
    this.timer = null;
    this.stats = { utterances: 0, packets: 0, maxLatenessMs: 0, sumLatenessMs: 0 };
  }

  async _open(router) {
    this.socket = await new Promise((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      s.once('error', reject);
      s.bind(0, '127.0.0.1', () => {
        s.removeListener('error', reject);
        resolve(s);
      });
    });
    this.socket.on('error', (err) => log.error(`inject socket for ${this.sourceProducerId}:`, err.message));
    this.socket.on('message', () => {}); // RTCP receiver reports from mediasoup: not needed
    this.transport = await router.createPlainTransport({
      listenInfo: { protocol: 'udp', ip: '127.0.0.1' },
      rtcpMux: true,
      comedia: true,
      appData: { kind: 'inject', sourceProducerId: this.sourceProducerId },
    });
    this.dest = { ip: this.transport.tuple.localIp, port: this.transport.tuple.localPort };
    this.producer = await this.transport.produce({
      kind: 'audio',
      rtpParameters: {
        codecs: [{ mimeType: 'audio/opus', payloadType: PAYLOAD_TYPE, clockRate: SAMPLE_RATE, channels: 2, rtcpFeedback: [] }],
        encodings: [{ ssrc: this.ssrc }],
      },
      appData: { type: 'tts', sourceProducerId: this.sourceProducerId, language: this.language },
    });
  }

  get producerId() {
    return this.producer ? this.producer.id : null;
  }

  /**
   * Queue 48 kHz mono samples for playback. Resolves when the first packet has been sent, with
   * {rtpTimestamp, sentMs, durationMs, queuedMs}; rejects if the injector closes first.
   */
  enqueue(samples) {
    if (this.closed) return Promise.reject(new Error('TTS producer closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ samples, resolve, reject, enqueuedMs: nowMs() });
      if (!this.current) this._startNext();
    });
  }

  _rtpClock(atMs) {
    return (this.tsBase + Math.round((atMs - this.clockZeroMs) * (SAMPLE_RATE / 1000))) >>> 0;
  }

  _startNext() {
    const item = this.queue.shift();
    if (!item) return;
    const now = nowMs();
    const startMs = Math.max(now, this.nextFreeMs);
    let ts0 = this._rtpClock(startMs);
    // Keep RTP time strictly ahead of the previous utterance even if rounding says otherwise.
    if (this.lastTs !== null && ((ts0 - this.lastTs) | 0) < FRAME_SAMPLES) ts0 = (this.lastTs + FRAME_SAMPLES) >>> 0;
    const frames = Math.max(1, Math.ceil(item.samples.length / FRAME_SAMPLES));
    this.current = { ...item, frames, index: 0, startMs, ts0 };
    this.nextFreeMs = startMs + frames * FRAME_MS + this.gapMs;
    this._pump();
  }

  // Send every packet that is due, then sleep until the next one. Due times are absolute
  // (startMs + 20 ms × index), so timer lateness never accumulates into drift.
  _pump() {
    this.timer = null;
    if (this.closed) return;
    while (this.current) {
      const c = this.current;
      const dueMs = c.startMs + c.index * FRAME_MS;
      const now = nowMs();
      if (dueMs > now + SEND_EARLY_TOLERANCE_MS) {
        this.timer = setTimeout(() => this._pump(), Math.max(1, Math.floor(dueMs - now)));
        return;
      }
      try {
        this._sendFrame(c, now, dueMs);
      } catch (err) {
        // One utterance fails; the producer's queue must go on (a stuck injector times out all later ones).
        log.error(`TTS injection failed: ${err.message}`);
        if (c.index === 0) c.reject(err);
        this.current = null;
        this._startNext();
        return;
      }
      if (c.index >= c.frames) {
        this.current = null;
        this._startNext(); // re-enters _pump via its own schedule
        return;
      }
    }
  }

  _encode(c, i) {
    let frame = c.samples.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES);
    if (frame.length < FRAME_SAMPLES) {
      const padded = new Int16Array(FRAME_SAMPLES);
      padded.set(frame);
      frame = padded;
    }
    const pcm = Buffer.from(frame.buffer, frame.byteOffset, FRAME_SAMPLES * 2);
    try {
      return this.encoder.encode(pcm, FRAME_SAMPLES);
    } catch (err) {
      // opusscript (wasm) can fail an instance ("Bad argument"); a fresh encoder usually works.
      log.warn(`TTS encoder failed (${err.message}); recreating it`);
      try { this.encoder.delete(); } catch (_) { /* already unusable */ }
      this._newEncoder();
      return this.encoder.encode(pcm, FRAME_SAMPLES);
    }
  }

  _newEncoder() {
    this.encoder = new OpusScript(SAMPLE_RATE, 1, OpusScript.Application.VOIP);
    this.encoder.setBitrate(32000);
    this.encoder.encoderCTL(OPUS_SET_COMPLEXITY, 5);
  }

  _sendFrame(c, now, dueMs) {
    const i = c.index;
    // The next frame is encoded right after this one is sent, so a due packet only costs a send.
    const payload = c.next || this._encode(c, i);
    const timestamp = (c.ts0 + i * FRAME_SAMPLES) >>> 0;
    const packet = buildRtp({ payloadType: PAYLOAD_TYPE, sequenceNumber: this.seq, timestamp, ssrc: this.ssrc, marker: i === 0, payload });
    this.seq = (this.seq + 1) & 0xffff;
    this.lastTs = timestamp;
    this.socket.send(packet, this.dest.port, this.dest.ip);
    const sentMs = nowMs();
    c.index += 1;
    c.next = c.index < c.frames ? this._encode(c, c.index) : null;
    const lateness = sentMs - dueMs;
    this.stats.packets += 1;
    this.stats.sumLatenessMs += lateness;
    if (lateness > this.stats.maxLatenessMs) this.stats.maxLatenessMs = lateness;
    this.metrics.ttsPackets.inc();
    this.metrics.ttsLateness.observe({}, Math.max(0, lateness));
    if (i === 0) {
      this.stats.utterances += 1;
      c.resolve({ rtpTimestamp: timestamp, sentMs, durationMs: (c.samples.length * 1000) / SAMPLE_RATE, queuedMs: c.startMs - c.enqueuedMs });
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const err = new Error('TTS producer closed');
    if (this.current && this.current.index === 0) this.current.reject(err);
    for (const item of this.queue) item.reject(err);
    this.queue = [];
    this.current = null;
    if (this.transport) this.transport.close(); // closes the producer
    if (this.socket) this.socket.close();
    this.encoder.delete();
  }
}

/**
 * Pay opusscript's one-time costs up front: it instantiates its wasm on first use and V8 compiles
 * each wasm function lazily on its first call (10–50 ms each for encode and decode). Paid inside
 * the pacing loop, that would make an utterance's first packets late and then burst.
 */
function warmUpOpus() {
  const codec = new OpusScript(SAMPLE_RATE, 1, OpusScript.Application.VOIP);
  codec.decode(codec.encode(Buffer.alloc(FRAME_SAMPLES * 2), FRAME_SAMPLES));
  codec.delete();
}

module.exports = { Injector, warmUpOpus };
