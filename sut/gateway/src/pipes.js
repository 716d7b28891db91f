'use strict';
// Media across gateway replicas. A room's peers may sit on different replicas (processes, each with
// its own mediasoup worker). When a peer on replica B consumes a producer that lives on replica A, B
// pipes it in through a pair of PipeTransports between the two replicas' routers of that room (one
// pair per room per replica pair, reused), asking A through rpc.js:
//   B: createPipeTransport; `pipe.open` {room, ip, port} → A: createPipeTransport, connect it to B's,
//      answer its own ip/port → B: connect to A's.
//   B: `pipe.consume` {room, producerId} → A: pipeTransport.consume({producerId}), answer kind,
//      rtpParameters, paused → B: pipeTransport.produce({id: producerId, ...}): the producer exists on
//      B under the same id, and B's peers consume it as if it were local.
//   A's pipe consumer 'producerclose' → `pipe.producerClosed` → B closes its piped producer (B's
//   consumers close with it). A room closing on either side → `pipe.close` → the other side closes its
//   pipe transport of that room, and with it what it piped.
// mediasoup's own router.pipeToRouter() cannot do this: it joins routers of one process. Producers
// are never paused by this gateway, so pause/resume is not forwarded.
//   A listener joining on B with a target language: `room.language` {room, language} → every other
// replica, whose sessions of that room gain a TTS producer for it (room.js), listed and announced as
// usual, so B's listener pipes it in like any other.

const { logger } = require('./logger');

const log = logger('pipes');

class PipeHub {
  /** @param {object} o rpc (ReplicaRpc), host (pipe listen address), metrics, rooms (roomId → Room|undefined) */
  constructor({ rpc, host, metrics, rooms }) {
    Object.assign(this, { rpc, host, metrics, rooms });
    this.state = new Map(); // roomId → {room, links: Map<node, Link>, inbound: Map<producerId, Promise<Producer>>, outbound}
    rpc.handle('pipe.open', (p, from) => this._onOpen(p, from));
    rpc.handle('pipe.consume', (p, from) => this._onConsume(p, from));
    rpc.handle('pipe.producerClosed', (p, from) => this._onProducerClosed(p, from));
    rpc.handle('pipe.close', (p, from) => this._onClose(p, from));
    rpc.handle('room.language', (p) => this._onLanguage(p));
  }

  /** A listener here wants `language` in room `roomId`: tell the other live replicas. */
  languageWanted(roomId, language) {
    for (const [node] of this.rpc.coordination.liveNodes()) {
      if (node !== this.rpc.nodeId) this.rpc.notify(node, 'room.language', { room: roomId, language });
    }
  }

  async _onLanguage({ room: roomId, language }) {
    const room = this.rooms(roomId);
    if (!room || room.closed || typeof language !== 'string' || !language) return; // no session of it here
    await room.addRemoteLanguage(language);
  }

  /** Pipe transports open now (for the gauge). */
  get transportCount() {
    let n = 0;
    for (const st of this.state.values()) n += st.links.size;
    return n;
  }

  _state(room) {
    let st = this.state.get(room.id);
    if (!st || st.room !== room) {
      st = { room, links: new Map(), inbound: new Map(), outbound: new Map() };
      this.state.set(room.id, st);
    }
    return st;
  }

  _localRoom(roomId) {
    const room = this.rooms(roomId);
    if (!room || room.closed) throw new Error(`room ${JSON.stringify(roomId)} is not open on replica ${this.rpc.nodeId}`);
    return room;
  }

  /** The pipe transport of `st`'s room towards replica `node` (created on first use). */
  _link(st, node) {
    let link = st.links.get(node);
    if (link) return link;
    link = { node, remote: null, connected: null, opened: null, transport: null };
    link.ready = st.room.router.createPipeTransport({ listenInfo: { protocol: 'udp', ip: this.host }, appData: { kind: 'pipe', node } })
      .then((t) => {
        link.transport = t;
        t.observer.on('close', () => {
          if (st.links.get(node) === link) st.links.delete(node);
        });
        return t;
      }, (err) => {
        if (st.links.get(node) === link) st.links.delete(node);
        throw err;
      });
    st.links.set(node, link);
    return link;
  }

  /** Connect the link to the other side's address, once; a second call must name the same address. */
  _connect(link, ip, port) {
    const remote = `${ip}:${port}`;
    if (link.remote) {
      if (link.remote !== remote) return Promise.reject(new Error(`pipe to replica ${link.node} is connected to ${link.remote}, not ${remote}`));
      return link.connected;
    }
    link.remote = remote;
    link.connected = link.ready.then((t) => t.connect({ ip, port }));
    return link.connected;
  }

  _closeLink(st, link) {
    if (st.links.get(link.node) === link) st.links.delete(link.node);
    link.ready.then((t) => t.close(), () => {});
  }

  static _address(t) {
    return { ip: t.tuple.localIp, port: t.tuple.localPort };
  }

  // ---- the consuming side (B) -------------------------------------------------------------------

  /** Replica `info.node`'s producer `info` ({id, kind, appData, node}) piped into `room`; shared by concurrent callers. */
  pipeIn(room, info) {
    const st = this._state(room);
    let piped = st.inbound.get(info.id);
    if (!piped) {
      piped = this._pipeIn(st, info);
      st.inbound.set(info.id, piped);
      piped.catch(() => {
        if (st.inbound.get(info.id) === piped) st.inbound.delete(info.id);
      });
    }
    return piped;
  }

  async _pipeIn(st, info) {
    const link = this._link(st, info.node);
    const transport = await link.ready;
    if (!link.opened) {
      link.opened = this.rpc.request(info.node, 'pipe.open', { room: st.room.id, ...PipeHub._address(transport) })
        .then((answer) => this._connect(link, answer.ip, answer.port));
      // A failed opening leaves nothing half-made behind: the next consume starts over.
      link.opened.catch(() => this._closeLink(st, link));
    }
    await link.opened;
    const c = await this.rpc.request(info.node, 'pipe.consume', { room: st.room.id, producerId: info.id });
    const producer = await transport.produce({
      id: info.id, kind: c.kind, rtpParameters: c.rtpParameters, paused: c.paused, appData: info.appData,
    });
    producer.observer.on('close', () => st.inbound.delete(info.id));
    this.metrics.pipedProducers.inc({ direction: 'in' });
    log.info(`room ${st.room.id}: producer ${info.id} (${info.appData && info.appData.type}) piped in from replica ${info.node}`);
    return producer;
  }

  _onProducerClosed({ room: roomId, producerId }, from) {
    const st = this.state.get(roomId);
    const piped = st && st.inbound.get(producerId);
    if (!piped) return;
    // Closing it closes B's consumers of it ('producerclose'); the room tells the peers (producerClosed).
    piped.then((producer) => {
      if (!producer.closed) log.info(`room ${roomId}: piped producer ${producerId} closed on replica ${from}`);
      producer.close();
    }, () => {});
  }

  // ---- the owning side (A) ----------------------------------------------------------------------

  async _onOpen({ room: roomId, ip, port }, from) {
    const st = this._state(this._localRoom(roomId));
    const old = st.links.get(from);
    // The other side started over (its previous opening failed): so do we.
    if (old && old.remote && old.remote !== `${ip}:${port}`) this._closeLink(st, old);
    const link = this._link(st, from);
    const transport = await link.ready;
    await this._connect(link, ip, port);
    if (!link.opened) link.opened = link.connected; // both sides opened at once: this one is done too
    return PipeHub._address(transport);
  }

  async _onConsume({ room: roomId, producerId }, from) {
    const room = this._localRoom(roomId);
    const st = this._state(room);
    const link = st.links.get(from);
    if (!link || !link.connected) throw new Error(`no pipe from replica ${from} in room ${roomId} (pipe.open first)`);
    const transport = await link.ready;
    await link.connected;
    if (!room.ownsProducer(producerId)) throw new Error(`producer ${producerId} is not in room ${roomId} on replica ${this.rpc.nodeId}`);
    const k = `${from} ${producerId}`;
    let consumer = st.outbound.get(k);
    if (!consumer || consumer.closed) {
      consumer = await transport.consume({ producerId });
      st.outbound.set(k, consumer);
      consumer.on('producerclose', () => this.rpc.notify(from, 'pipe.producerClosed', { room: roomId, producerId }));
      consumer.observer.on('close', () => {
        if (st.outbound.get(k) === consumer) st.outbound.delete(k);
      });
      this.metrics.pipedProducers.inc({ direction: 'out' });
      log.info(`room ${roomId}: producer ${producerId} piped out to replica ${from}`);
    }
    return { kind: consumer.kind, rtpParameters: consumer.rtpParameters, paused: consumer.producerPaused };
  }

  // ---- closing ----------------------------------------------------------------------------------

  _onClose({ room: roomId }, from) {
    const st = this.state.get(roomId);
    const link = st && st.links.get(from);
    if (link) this._closeLink(st, link);
  }

  /** The room closed here: tell every replica piped with it, drop its pipes. */
  roomClosed(room) {
    const st = this.state.get(room.id);
    if (!st || st.room !== room) return;
    this.state.delete(room.id);
    for (const link of [...st.links.values()]) {
      this.rpc.notify(link.node, 'pipe.close', { room: room.id });
      this._closeLink(st, link);
    }
  }

  /** A replica said goodbye: its pipes carry nothing any more. */
  nodeGone(node) {
    for (const st of this.state.values()) {
      const link = st.links.get(node);
      if (link) this._closeLink(st, link);
    }
  }
}

module.exports = { PipeHub };
