'use strict';
// A room: one mediasoup Router, its peers (each with transports, producers, consumers) and, per
// mic producer, the speech session (tap → pipeline → one TTS injector per target language). Broadcasts
// go through the Socket.IO room `room:<id>` (across replicas with the Redis adapter). With gateway
// replicas, the room's producers are listed in the Redis directory (directory.js), and a producer
// living on another replica is piped in before it is consumed here (pipes.js).
//
// Target languages of a mic: its speaker's own targetLanguage and the targetLanguage of every listener
// in the room (on any replica), less the mic's source language. A listener joining with a language new
// to the room adds a TTS producer for it to every session (announced with newProducer); TTS producers
// stay until their mic closes, also when the listener that asked for them leaves.

const { Tap } = require('./tap');
const { Injector } = require('./inject');
const { Pipeline } = require('./pipeline');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('room');

const MEDIA_CODECS = [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }];

class RequestError extends Error {} // a client mistake: the message goes back in the ack

class Peer {
  constructor({ id, socket, role, sourceLanguage, targetLanguage }) {
    Object.assign(this, { id, socket, role, sourceLanguage, targetLanguage });
    this.transports = new Map();
    this.producers = new Map();
    this.consumers = new Map();
  }

  transport(id, direction) {
    const t = this.transports.get(id);
    if (!t) throw new RequestError(`unknown transportId ${JSON.stringify(id)} (not one of this peer's transports)`);
    if (direction && t.appData.direction !== direction) {
      throw new RequestError(`transport ${id} is a ${t.appData.direction} transport; this request needs a ${direction} transport`);
    }
    return t;
  }
}

/** Injection numbers of a session's TTS producers, summed over its languages. */
function injectStats(s) {
  const sum = { utterances: 0, packets: 0, maxLatenessMs: 0, sumLatenessMs: 0 };
  for (const inj of s.injectors.values()) {
    sum.utterances += inj.stats.utterances;
    sum.packets += inj.stats.packets;
    sum.sumLatenessMs += inj.stats.sumLatenessMs;
    sum.maxLatenessMs = Math.max(sum.maxLatenessMs, inj.stats.maxLatenessMs);
  }
  return sum;
}

/** One line of tap and injection numbers, logged when a session ends. */
function describeSession(s) {
  const t = s.tap.stats;
  const i = injectStats(s);
  const spanS = t.packets > 1 ? (t.lastMs - t.firstMs) / 1000 : 0;
  const rate = spanS > 0 ? ((t.packets - 1) / spanS).toFixed(1) : '-';
  const meanLate = i.packets ? (i.sumLatenessMs / i.packets).toFixed(2) : '-';
  return `tap: ${t.packets} packets (${rate}/s), ${t.lost} lost, ${t.decoded} decoded, ${t.decodeErrors} undecodable; `
    + `tts (${[...s.injectors.keys()].join(', ') || 'no language'}): ${i.utterances} utterances, ${i.packets} packets, send lateness mean ${meanLate} ms max ${i.maxLatenessMs.toFixed(2)} ms`;
}

class Room {
  /**
   * Create a room with a fresh Router on `worker`. deps: io, config, backends, groundTruth, metrics,
   * directory (RoomDirectory), pipes (PipeHub or null: no replicas)
   */
  static async create(id, worker, deps) {
    const router = await worker.createRouter({ mediaCodecs: MEDIA_CODECS });
    return new Room(id, worker, router, deps);
  }

  constructor(id, worker, router, deps) {
    Object.assign(this, { id, worker, router }, deps);
    this.channel = `room:${id}`;
    this.peers = new Map();
    this.sessions = new Map(); // mic producer id → Session {tap, pipeline, peer, injectors: language → Injector}
    this.remoteLanguages = new Set(); // target languages of listeners on other gateway replicas
    this.closed = false;
    router.observer.on('close', () => this.close());
  }

  get producerCount() {
    let n = 0;
    for (const s of this.sessions.values()) n += s.injectors.size; // one TTS producer per language
    for (const p of this.peers.values()) n += p.producers.size;
    return n;
  }

  /** Emit to every socket in the room, or to all but `exceptSocket`. */
  emit(event, payload, exceptSocket = null) {
    if (exceptSocket) exceptSocket.to(this.channel).emit(event, payload);
    else this.io.to(this.channel).emit(event, payload);
  }

  addPeer(peer) {
    if (this.peers.has(peer.id)) throw new RequestError(`peerId ${JSON.stringify(peer.id)} is already in room ${JSON.stringify(this.id)}`);
    this.peers.set(peer.id, peer);
    peer.socket.join(this.channel);
  }

  /** Close everything the peer owns; returns true when the room is now empty. */
  removePeer(peer) {
    if (this.peers.get(peer.id) !== peer) return this.peers.size === 0;
    for (const t of peer.transports.values()) t.close(); // closes its producers and consumers
    peer.transports.clear();
    this.peers.delete(peer.id);
    peer.socket.leave(this.channel);
    return this.peers.size === 0;
  }

  /** ProducerInfo of every producer in the room (mic and TTS), except those of `exceptPeer`. */
  producerInfos(exceptPeer = null) {
    const out = [];
    for (const p of this.peers.values()) {
      if (p === exceptPeer) continue;
      for (const producer of p.producers.values()) out.push(this._info(producer, p.id));
    }
    for (const s of this.sessions.values()) {
      for (const inj of s.injectors.values()) out.push(this._info(inj.producer, s.peer.id));
    }
    return out;
  }

  _info(producer, peerId) {
    return { id: producer.id, peerId, kind: producer.kind, appData: producer.appData };
  }

  /** A producer of this replica's peers or sessions (not one piped in from another replica). */
  ownsProducer(producerId) {
    return this.producerInfos().some((p) => p.id === producerId);
  }

  /** producerInfos() of the whole room: this replica's and, from the directory, the other replicas'. */
  async listProducers(exceptPeer = null) {
    const local = this.producerInfos(exceptPeer);
    const seen = new Set(local.map((p) => p.id));
    const remote = (await this.directory.remoteProducers(this.id)).filter((p) => !seen.has(p.id));
    return [...local, ...remote.map(({ id, peerId, kind, appData }) => ({ id, peerId, kind, appData }))];
  }

  async createWebRtcTransport(peer, direction) {
    const { host, announcedIp } = this.config;
    const transport = await this.router.createWebRtcTransport({
      listenInfos: [{ protocol: 'udp', ip: host, announcedIp }],
      appData: { direction, peerId: peer.id },
    });
    const createdMs = nowMs();
    peer.transports.set(transport.id, transport);
    transport.on('dtlsstatechange', (state) => {
      if (state === 'connected') {
        this.metrics.transportConnect.observe({ direction }, (nowMs() - createdMs) / 1000);
        log.debug(`peer ${peer.id} ${direction} transport connected in ${(nowMs() - createdMs).toFixed(1)} ms`);
      } else if (state === 'failed' || state === 'closed') {
        log.warn(`peer ${peer.id} ${direction} transport ${transport.id}: DTLS ${state}; closing it`);
        transport.close();
      }
    });
    transport.observer.on('close', () => peer.transports.delete(transport.id));
    return {
      id: transport.id,
      iceParameters: transport.iceParameters,
      iceCandidates: transport.iceCandidates,
      dtlsParameters: transport.dtlsParameters,
    };
  }

  async connectWebRtcTransport(peer, transportId, dtlsParameters) {
    await peer.transport(transportId).connect({ dtlsParameters });
  }

  async produce(peer, { transportId, kind, rtpParameters }) {
    if (peer.role !== 'speaker') throw new RequestError(`peer ${peer.id} joined as ${peer.role}; only speakers produce`);
    if (kind !== 'audio') throw new RequestError(`kind must be "audio", got ${JSON.stringify(kind)}`);
    const transport = peer.transport(transportId, 'send');
    const t0 = nowMs();
    const producer = await transport.produce({ kind, rtpParameters, appData: { type: 'mic', language: peer.sourceLanguage } });
    peer.producers.set(producer.id, producer);
    producer.observer.on('close', () => this._onProducerClosed(peer, producer));
    const t1 = nowMs();
    try {
      await this._startSession(peer, producer);
    } catch (err) {
      producer.close();
      throw new Error(`cannot start the speech pipeline for the producer: ${err.message}`);
    }
    log.debug(`peer ${peer.id} produced ${producer.id}: producer ${(t1 - t0).toFixed(1)} ms, pipeline ${(nowMs() - t1).toFixed(1)} ms`);
    const session = this.sessions.get(producer.id);
    const tts = [...session.injectors.values()].map((inj) => this._info(inj.producer, peer.id));
    // Listed before announced: a peer on another replica that hears of them looks them up to pipe them.
    await this.directory.addProducers(this.id, [this._info(producer, peer.id), ...tts]);
    if (producer.closed) return { id: producer.id }; // closed meanwhile: producerClosed went out already
    this.emit('newProducer', this._info(producer, peer.id), peer.socket);
    // TTS producers belong to no peer's socket: every peer, the speaker included, hears of them.
    for (const info of tts) this.emit('newProducer', info);
    // A listener that joined while the session started: its language was not known then.
    await this._serveLanguages(session);
    return { id: producer.id };
  }

  /** The target languages a mic of `peer` is translated into (module comment). */
  _languagesFor(peer) {
    const wanted = [peer.targetLanguage];
    for (const p of this.peers.values()) if (p.role === 'listener') wanted.push(p.targetLanguage);
    wanted.push(...this.remoteLanguages);
    return [...new Set(wanted)].filter((lang) => lang && lang !== peer.sourceLanguage);
  }

  /** A listener on another replica wants `language` (pipes.js): serve it as a local one. */
  async addRemoteLanguage(language) {
    if (this.remoteLanguages.has(language)) return;
    this.remoteLanguages.add(language);
    await this.serveLanguages();
  }

  /** Give every session a TTS producer for each language now wanted (after a listener joined). */
  async serveLanguages() {
    await Promise.all([...this.sessions.values()].map((s) => this._serveLanguages(s)));
  }

  async _serveLanguages(s) {
    const missing = this._languagesFor(s.peer).filter((lang) => !s.injectors.has(lang) && !s.starting.has(lang));
    await Promise.all(missing.map(async (language) => {
      s.starting.add(language);
      try {
        const injector = await this._injector(s.producerId, language);
        if (this.sessions.get(s.producerId) !== s) {
          injector.close(); // the mic closed meanwhile
          return;
        }
        s.injectors.set(language, injector);
        s.pipeline.addLanguage(language, injector);
        const info = this._info(injector.producer, s.peer.id);
        await this.directory.addProducers(this.id, [info]);
        if (this.sessions.get(s.producerId) === s) this.emit('newProducer', info);
        log.info(`producer ${s.producerId}: now also translated into ${language}`);
      } catch (err) {
        // The session goes on in its other languages; a listener of this one hears nothing.
        log.error(`producer ${s.producerId}: no TTS producer for ${language}: ${err.message}`);
      } finally {
        s.starting.delete(language);
      }
    }));
  }

  _injector(sourceProducerId, language) {
    return Injector.create({
      router: this.router, sourceProducerId, language, metrics: this.metrics, gapMs: this.config.ttsGapMs,
    });
  }

  async _startSession(peer, producer) {
    const injectors = new Map();
    let tap = null;
    try {
      for (const language of await this.directory.listenerLanguages(this.id)) this.remoteLanguages.add(language);
      const languages = this._languagesFor(peer);
      const made = await Promise.allSettled(languages.map((language) => this._injector(producer.id, language)));
      made.forEach((m, i) => { if (m.status === 'fulfilled') injectors.set(languages[i], m.value); });
      const failed = made.find((m) => m.status === 'rejected');
      if (failed) throw failed.reason;
      const pipeline = new Pipeline({
        producerId: producer.id,
        peerId: peer.id,
        sourceLanguage: peer.sourceLanguage,
        outputs: injectors,
        backends: this.backends,
        emit: (event, payload) => this.emit(event, payload),
        groundTruth: this.groundTruth,
        metrics: this.metrics,
        reportErrors: this.config.reportErrors,
      });
      tap = await Tap.create({
        router: this.router,
        producer,
        vad: this.config.vad,
        metrics: this.metrics,
        onUtterance: (u) => pipeline.onUtterance(u),
        loss: this.config.tapLoss,
      });
      if (producer.closed) throw new Error('producer closed while its pipeline started');
      this.sessions.set(producer.id, { producerId: producer.id, tap, pipeline, peer, injectors, starting: new Set() });
    } catch (err) {
      if (tap) tap.close();
      for (const inj of injectors.values()) inj.close();
      throw err;
    }
  }

  /** The TTS producer ids of a session, every language. */
  static _ttsIds(s) {
    return [...s.injectors.values()].map((inj) => inj.producer.id);
  }

  _onProducerClosed(peer, producer) {
    peer.producers.delete(producer.id);
    const s = this.sessions.get(producer.id);
    this.directory.removeProducers(this.id, s ? [producer.id, ...Room._ttsIds(s)] : [producer.id]);
    if (s) {
      this.sessions.delete(producer.id);
      log.info(`producer ${producer.id} closed; ${describeSession(s)}`);
      s.tap.close();
      s.pipeline.close();
      for (const inj of s.injectors.values()) {
        inj.close();
        this.emit('producerClosed', { id: inj.producer.id });
      }
    }
    this.emit('producerClosed', { id: producer.id });
  }

  async consume(peer, { transportId, producerId, rtpCapabilities }) {
    const transport = peer.transport(transportId, 'recv');
    let info = this.producerInfos(peer).find((p) => p.id === producerId);
    if (!info && this.pipes) {
      const remote = await this.directory.remoteProducer(this.id, producerId);
      if (remote) {
        try {
          await this.pipes.pipeIn(this, remote);
        } catch (err) {
          throw new Error(`producer ${producerId} lives on gateway replica ${remote.node}; piping it here failed: ${err.message}`);
        }
        info = remote;
      }
    }
    if (!info) throw new RequestError(`unknown producerId ${JSON.stringify(producerId)} in room ${JSON.stringify(this.id)}`);
    if (!this.router.canConsume({ producerId, rtpCapabilities })) {
      throw new RequestError(`rtpCapabilities cannot consume producer ${producerId} (no common codec)`);
    }
    // Paused until the client says its side is ready (resumeConsumer), so no packet is lost
    // before the client's track exists.
    const consumer = await transport.consume({ producerId, rtpCapabilities, paused: true, appData: { peerId: peer.id } });
    peer.consumers.set(consumer.id, consumer);
    consumer.observer.on('close', () => peer.consumers.delete(consumer.id));
    return { id: consumer.id, producerId, kind: consumer.kind, rtpParameters: consumer.rtpParameters, appData: info.appData };
  }

  async resumeConsumer(peer, consumerId) {
    const consumer = peer.consumers.get(consumerId);
    if (!consumer) throw new RequestError(`unknown consumerId ${JSON.stringify(consumerId)}`);
    await consumer.resume();
  }

  /** Per-session tap/injector numbers for logs and tests. */
  sessionStats() {
    return [...this.sessions].map(([id, s]) => ({
      producerId: id, languages: [...s.injectors.keys()], tap: s.tap.stats, inject: injectStats(s),
    }));
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    const listed = [...this.sessions].flatMap(([id, s]) => [id, ...Room._ttsIds(s)]);
    if (listed.length) this.directory.removeProducers(this.id, listed);
    for (const s of this.sessions.values()) {
      s.tap.close();
      s.pipeline.close();
      for (const inj of s.injectors.values()) inj.close();
    }
    this.sessions.clear();
    if (this.pipes) this.pipes.roomClosed(this);
    if (!this.router.closed) this.router.close();
  }
}

module.exports = { Room, Peer, RequestError };
