'use strict';
// The TTS return path for one mic producer: a PlainTransport (comedia: mediasoup learns our
// address from the first packet) with an Opus Producer, fed by a local UDP socket at real-time
// pace. Utterances play back to back in enqueue order, separated by at least gapMs of nothing
// (the producer sends no packets between utterances).
//
// The injector packetizes and paces; it does not encode. An utterance is a clip of Opus packets
// (ttsaudio.js): the TTS service's own Ogg Opus packets, or, for a WAV answer (or raw samples
// given to enqueue), packets encoded as they play by an encoder that lives only as long as that
// clip plays. No codec state per caller, so no per-process limit on callers.

const crypto = require('crypto');
const dgram = require('dgram');
const { buildRtp } = require('./rtp');
const { PcmClip } = require('./ttsaudio');
const opus = require('./opus');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('inject');
const SAMPLE_RATE = 48000;
const SAMPLES_PER_MS = SAMPLE_RATE / 1000;
const MIN_TS_STEP = 960; // one 20 ms frame: RTP time of a new utterance stays ahead of the last one
const PAYLOAD_TYPE = 100;
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
    this.ssrc = crypto.randomBytes(4).readUInt32BE(0);
    this.seq = crypto.randomBytes(2).readUInt16BE(0);
    this.clockZeroMs = nowMs();
    this.tsBase = crypto.randomBytes(4).readUInt32BE(0);
    this.lastTs = null;
    this.queue = []; // pending {clip, resolve, reject, enqueuedMs}
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
    // A connected socket: each send skips the address lookup and the kernel's route lookup.
    await new Promise((resolve) => this.socket.connect(this.dest.port, this.dest.ip, resolve));
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
   * Queue a clip (ttsaudio.js) — or 48 kHz mono samples, encoded as they play — for playback.
   * Resolves when the first packet has been sent, with {rtpTimestamp, sentMs, durationMs, queuedMs};
   * rejects if the injector closes first.
   */
  enqueue(audio) {
    if (this.closed) return Promise.reject(new Error('TTS producer closed'));
    const clip = audio instanceof Int16Array ? new PcmClip(audio) : audio;
    return new Promise((resolve, reject) => {
      this.queue.push({ clip, resolve, reject, enqueuedMs: nowMs() });
      if (!this.current) this._startNext();
    });
  }

  _rtpClock(atMs) {
    return (this.tsBase + Math.round((atMs - this.clockZeroMs) * SAMPLES_PER_MS)) >>> 0;
  }

  _startNext() {
    const item = this.queue.shift();
    if (!item) return;
    const now = nowMs();
    const startMs = Math.max(now, this.nextFreeMs);
    let ts0 = this._rtpClock(startMs);
    // Keep RTP time strictly ahead of the previous utterance even if rounding says otherwise.
    if (this.lastTs !== null && ((ts0 - this.lastTs) | 0) < MIN_TS_STEP) ts0 = (this.lastTs + MIN_TS_STEP) >>> 0;
    this.current = { ...item, index: 0, next: null, startMs, ts0 };
    this.nextFreeMs = startMs + item.clip.totalSamples / SAMPLES_PER_MS + this.gapMs;
    this._pump();
  }

  /** The current utterance is done (or failed): free its clip, start the next one. */
  _finish() {
    if (this.current) this.current.clip.free();
    this.current = null;
    this._startNext(); // re-enters _pump via its own schedule
  }

  // Send every packet that is due, then sleep until the next one. Due times are absolute
  // (startMs + the packet's offset in the clip), so timer lateness never accumulates into drift.
  _pump() {
    this.timer = null;
    if (this.closed) return;
    while (this.current) {
      const c = this.current;
      const dueMs = c.startMs + c.clip.offset(c.index) / SAMPLES_PER_MS;
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
        this._finish();
        return;
      }
      if (c.index >= c.clip.frames) {
        this._finish();
        return;
      }
    }
  }

  _sendFrame(c, now, dueMs) {
    const i = c.index;
    // A WAV clip encodes the next frame right after this one is sent, so a due packet only costs a send.
    const payload = c.next || c.clip.packet(i);
    const timestamp = (c.ts0 + c.clip.offset(i)) >>> 0;
    const packet = buildRtp({ payloadType: PAYLOAD_TYPE, sequenceNumber: this.seq, timestamp, ssrc: this.ssrc, marker: i === 0, payload });
    this.seq = (this.seq + 1) & 0xffff;
    this.lastTs = timestamp;
    // Read before sending: on a connected socket the packet can reach a listener (loopback, another
    // core) before send() returns, and the send time must not be later than any arrival.
    const sentMs = nowMs();
    this.socket.send(packet);
    c.index += 1;
    c.next = c.index < c.clip.frames ? c.clip.packet(c.index) : null;
    const lateness = sentMs - dueMs;
    this.stats.packets += 1;
    this.stats.sumLatenessMs += lateness;
    if (lateness > this.stats.maxLatenessMs) this.stats.maxLatenessMs = lateness;
    this.metrics.ttsPackets.inc();
    this.metrics.ttsLateness.observe({}, Math.max(0, lateness));
    if (i === 0) {
      this.stats.utterances += 1;
      c.resolve({ rtpTimestamp: timestamp, sentMs, durationMs: c.clip.durationMs, queuedMs: c.startMs - c.enqueuedMs });
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const err = new Error('TTS producer closed');
    if (this.current) {
      if (this.current.index === 0) this.current.reject(err);
      this.current.clip.free();
    }
    for (const item of this.queue) {
      item.reject(err);
      item.clip.free();
    }
    this.queue = [];
    this.current = null;
    if (this.transport) this.transport.close(); // closes the producer
    if (this.socket) this.socket.close();
  }
}

/** Pay the Opus codec's one-time costs at start (opus.js); kept under this name for callers. */
function warmUpOpus() {
  opus.warmUp();
}

module.exports = { Injector, warmUpOpus };
