'use strict';
// The pipeline's ear on one mic producer: a PlainTransport consumer sends the producer's RTP to a
// local UDP socket; each packet is parsed, Opus-decoded (mono, 48 kHz) and fed to the VAD.

const dgram = require('dgram');
const OpusScript = require('opusscript');
const { parseRtp, isRtcp, seqDelta } = require('./rtp');
const { Vad } = require('./vad');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('tap');
const SAMPLE_RATE = 48000;
const AUDIO_LEVEL_URI = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';
const MAX_CONCEALED_PACKETS = 50; // gaps up to 1 s are filled with silence; longer ones are a new stream

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
  static async create({ router, producer, vad, metrics, onUtterance }) {
    const tap = new Tap(producer, vad, metrics, onUtterance);
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
    this.decoder = new OpusScript(SAMPLE_RATE, 1);
    this.lastSeq = null;
    this.stats = { packets: 0, lost: 0, decodeErrors: 0, firstMs: null, lastMs: null };
    this.vad = new Vad({ ...vadCfg, sampleRate: SAMPLE_RATE, onUtterance });
    this.vadSource = vadCfg.source || 'energy';
    this.levelThreshold = vadCfg.levelThresholdDbov ?? -45;
    this.audioLevelId = null; // header extension id of ssrc-audio-level on the tap consumer
    // Packets may simply stop (producer paused, sender gone): close the utterance after the
    // hangover even without more frames. refresh() re-arms it cheaply on every packet.
    this.idleTimer = setTimeout(() => this.vad.flush('idle'), vadCfg.hangoverMs);
    this.idleTimer.unref();
  }

  async _open(router) {
    this.socket = await bindSocket('127.0.0.1');
    this.socket.on('message', (msg) => this._onPacket(msg, nowMs()));
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
    log.debug(`tap for producer ${this.producerId}: udp ${this.transport.tuple.localPort} -> ${this.socket.address().port}`);
  }

  _onPacket(msg, recvMs) {
    if (this.closed || isRtcp(msg)) return;
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
        if (missing <= MAX_CONCEALED_PACKETS) this.vad.gap(missing * 960, recvMs);
      }
    }
    this.lastSeq = pkt.sequenceNumber;

    if (pkt.payload.length === 0) return;
    let pcm;
    try {
      pcm = this.decoder.decode(pkt.payload);
    } catch (err) {
      this.stats.decodeErrors += 1;
      if (this.stats.decodeErrors <= 3) log.warn(`producer ${this.producerId}: opus decode failed:`, err.message);
      return;
    }
    // Int16Array views need 2-byte alignment; pooled Buffers are 8-aligned, but copy if not.
    const samples = pcm.byteOffset % 2 === 0
      ? new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length >> 1)
      : new Int16Array(Uint8Array.from(pcm).buffer);
    this.vad.push(samples, recvMs, this._packetVoiced(pkt));
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
    this.decoder.delete();
  }
}

module.exports = { Tap };
