'use strict';
// The pipeline's ear on one mic producer: a PlainTransport consumer sends the producer's RTP to a
// local UDP socket; each packet is parsed and fed to the VAD.
//
// What is decoded, and when, depends on the VAD's source (docs/reference-stack.md):
//   * "audio-level" (the stack default) with the RFC 6464 header negotiated: the voice decision is
//     the packet's header, so packets are NOT decoded as they arrive. The VAD keeps the Opus payloads
//     of the preroll window and of the open utterance (bounded by prerollMs + maxUtteranceMs), and
//     an utterance's packets are decoded when it ends (segment.js), to build the WAV for STT (16 kHz,
//     the rate STT works at). A packet that lacks the header is decoded on its own to measure its
//     energy (the documented fallback).
//   * "energy", or no audio-level header on the tap's consumer: every packet is decoded (mono, 48 kHz)
//     as it arrives: the energy VAD needs the samples.
// Lost packets count as silence either way.

const dgram = require('dgram');
const { parseRtp, isRtcp, seqDelta } = require('./rtp');
const { Vad, rmsDbfs, concatPcm } = require('./vad');
const { OpusDecoder, packetSamples } = require('./opus');
const { decodeSegment, STT_RATE } = require('./segment');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('tap');
const SAMPLE_RATE = 48000;
const AUDIO_LEVEL_URI = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';
const MAX_CONCEALED_PACKETS = 50; // gaps up to 1 s are filled with silence; longer ones are a new stream
const DEFAULT_PACKET_SAMPLES = 960; // 20 ms: the duration a lost packet stands for until one has arrived
const LOGGED_DECODE_ERRORS = 3; // per producer: enough to diagnose, not a flood

function bindSocket(ip) {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, ip, () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
  });
}

class Tap {
  /**
   * @param {object} o router, producer, vad (config.vad), metrics, onUtterance(u)
   */
  static async create({ router, producer, vad, metrics, onUtterance, loss = 0 }) {
    const tap = new Tap(producer, vad, metrics, onUtterance);
    tap.loss = loss; // fault [faults] tap_loss: this fraction of packets is lost before the tap
    try {
      await tap._open(router);
    } catch (err) {
      tap.close();
      throw err;
    }
    return tap;
  }

  constructor(producer, vadCfg, metrics, onUtterance) {
    this.producerId = producer.id;
    this.producer = producer;
    this.metrics = metrics;
    this.closed = false;
    this.socket = null;
    this.transport = null;
    this.consumer = null;
    this.decoder = null; // energy path: one streaming decoder; audio-level path: header-less packets only
    this.lastSeq = null;
    this.lastSamples = DEFAULT_PACKET_SAMPLES;
    this.stats = { packets: 0, lost: 0, decoded: 0, decodeErrors: 0, firstMs: null, lastMs: null };
    this.vadSource = vadCfg.source || 'energy';
    this.energyThreshold = vadCfg.thresholdDbfs;
    this.levelThreshold = vadCfg.levelThresholdDbov ?? -45;
    this.audioLevelId = null; // header extension id of ssrc-audio-level on the tap consumer
    this.levelMode = false; // set once the consumer exists: audio-level source and header negotiated
    this.vad = new Vad({
      ...vadCfg,
      sampleRate: SAMPLE_RATE,
      // The audio-level path decodes at STT's rate (segment.js); the energy path has 48 kHz samples.
      onUtterance: (u) => onUtterance(this.levelMode ? { ...u, sampleRate: STT_RATE } : u),
      // What the VAD kept: payloads to decode now (audio-level path) or decoded frames (energy path).
      assemble: (chunks) => (this.levelMode ? this._decodeUtterance(chunks) : concatPcm(chunks)),
    });
    // Packets may simply stop (producer paused, sender gone): close the utterance after the
    // hangover even without more frames. refresh() re-arms it cheaply on every packet.
    this.idleTimer = setTimeout(() => this.vad.flush('idle'), vadCfg.hangoverMs);
    this.idleTimer.unref();
  }

  async _open(router) {
    this.socket = await bindSocket('127.0.0.1');
    this.socket.on('error', (err) => log.error(`tap socket for producer ${this.producerId}:`, err.message));
    // comedia false + explicit connect(): mediasoup sends to our socket from the first packet.
    this.transport = await router.createPlainTransport({
      listenInfo: { protocol: 'udp', ip: '127.0.0.1' },
      rtcpMux: true,
      comedia: false,
      appData: { kind: 'tap', producerId: this.producerId },
    });
    await this.transport.connect({ ip: '127.0.0.1', port: this.socket.address().port });
    // The router's full capabilities: mediasoup then adds the RTP header-extension block
    // (one-byte 0xBEDE form), which parseRtp() skips.
    this.consumer = await this.transport.consume({
      producerId: this.producerId,
      rtpCapabilities: router.rtpCapabilities,
      paused: false,
    });
    const ext = (this.consumer.rtpParameters.headerExtensions || []).find((h) => h.uri === AUDIO_LEVEL_URI);
    this.audioLevelId = ext ? ext.id : null;
    this.levelMode = this.vadSource === 'audio-level' && this.audioLevelId !== null;
    // Listening only now, once the mode is known, so every packet is handled one way (what the VAD
    // keeps is all payloads or all samples). Packets mediasoup sent before this point are the
    // stream's first milliseconds, before any speech could start.
    this.socket.on('message', (msg) => this._onPacket(msg, nowMs()));
    log.debug(`tap for producer ${this.producerId}: udp ${this.transport.tuple.localPort} -> ${this.socket.address().port}, `
      + `${this.levelMode ? 'audio-level VAD (decode at utterance end)' : 'energy VAD (decode every packet)'}`);
  }

  _onPacket(msg, recvMs) {
    if (this.closed || isRtcp(msg)) return;
    if (this.loss > 0 && Math.random() < this.loss) return; // injected loss: as if lost on the wire
    const pkt = parseRtp(msg);
    if (!pkt) return;
    this.stats.packets += 1;
    this.metrics.tapPackets.inc();
    if (this.stats.firstMs === null) this.stats.firstMs = recvMs;
    this.stats.lastMs = recvMs;
    this.idleTimer.refresh();

    if (this.lastSeq !== null) {
      const d = seqDelta(this.lastSeq, pkt.sequenceNumber);
      if (d === 0 || d > 0x8000) return; // duplicate or late (reordered) packet: too late for the VAD
      if (d > 1) {
        const missing = d - 1;
        this.stats.lost += missing;
        this.metrics.tapLost.inc({}, missing);
        if (missing <= MAX_CONCEALED_PACKETS) this._lost(missing, recvMs);
      }
    }
    this.lastSeq = pkt.sequenceNumber;

    if (pkt.payload.length === 0) return;
    if (this.levelMode) this._levelPacket(pkt, recvMs);
    else this._energyPacket(pkt, recvMs);
  }

  /** Missing packets: silence of the last packet's duration each (unvoiced for the VAD). */
  _lost(missing, recvMs) {
    if (!this.levelMode) {
      this.vad.gap(missing * this.lastSamples, recvMs);
      return;
    }
    for (let i = 0; i < missing; i++) this.vad.unit(this.lastSamples, recvMs, false, null);
  }

  _levelPacket(pkt, recvMs) {
    const n = packetSamples(pkt.payload);
    if (n === 0) {
      this._decodeFailed(new Error('malformed Opus packet (TOC)'));
      return;
    }
    this.lastSamples = n;
    let voiced = this._packetVoiced(pkt);
    if (voiced === null) {
      // No level header on this packet: its energy decides, as documented.
      const pcm = this._decode(pkt.payload);
      if (pcm === null) return;
      voiced = rmsDbfs(pcm) >= this.energyThreshold;
    }
    this.vad.unit(n, recvMs, voiced, pkt.payload);
  }

  _energyPacket(pkt, recvMs) {
    const pcm = this._decode(pkt.payload);
    if (pcm === null) return;
    this.lastSamples = pcm.length;
    this.vad.push(pcm, recvMs, null);
  }

  /** One packet through this tap's streaming decoder: its samples, or null (counted, logged). */
  _decode(payload) {
    if (this.decoder === null) this.decoder = new OpusDecoder(SAMPLE_RATE, 1);
    try {
      const pcm = this.decoder.decode(payload);
      this._countDecoded(1);
      return pcm;
    } catch (err) {
      this._decodeFailed(err);
      return null;
    }
  }

  /** An ended utterance's audio (audio-level path): its packets decoded now, with a decoder of its own. */
  _decodeUtterance(chunks) {
    const audio = decodeSegment(chunks, {
      onError: (err) => this._decodeFailed(err),
      onDecoded: (count) => this._countDecoded(count),
    });
    audio.catch(() => {}); // the pipeline awaits it and reports a failure; never an unhandled rejection
    return audio;
  }

  _countDecoded(count) {
    this.stats.decoded += count;
    this.metrics.tapDecoded.inc({}, count);
  }

  _decodeFailed(err) {
    this.stats.decodeErrors += 1;
    if (this.stats.decodeErrors <= LOGGED_DECODE_ERRORS) log.warn(`producer ${this.producerId}: opus decode failed:`, err.message);
  }

  /** The sender's own level (RFC 6464) decides, when configured and present; else null (energy). */
  _packetVoiced(pkt) {
    if (this.vadSource !== 'audio-level' || this.audioLevelId === null || !pkt.extensions) return null;
    const ext = pkt.extensions.get(this.audioLevelId);
    if (!ext || ext.length < 1) return null;
    return -(ext[0] & 0x7f) > this.levelThreshold;
  }

  /**
   * Stop tapping. An utterance in progress is dropped, not flushed: the producer is gone, so is
   * the TTS producer its translation would play on.
   */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    if (this.transport) this.transport.close(); // closes the consumer too
    if (this.socket) this.socket.close();
    if (this.decoder) this.decoder.free();
    this.decoder = null;
  }
}

module.exports = { Tap };
