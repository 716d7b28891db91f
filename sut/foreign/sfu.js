'use strict';
// Rooms, peers and request handlers of the foreign SFU (dialect: see the header of server.js).
// Plain forwarding only: no taps, no pipeline, no result events.

const { randomBytes } = require('crypto');

// Opus is what the tester sends; VP8 is there because a plain SFU is not audio-only by nature.
const MEDIA_CODECS = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000 },
];
// A room opened but never entered would keep its router forever; close it after this long.
const UNENTERED_ROOM_MS = 60_000;

class ClientError extends Error {} // the client's mistake: its text goes back, nothing is logged

function str(payload, key) {
  const v = payload[key];
  if (typeof v !== 'string' || v.length === 0) throw new ClientError(`${key} must be a non-empty string`);
  return v;
}

function obj(payload, key, optional = false) {
  const v = payload[key];
  if (optional && (v === undefined || v === null)) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ClientError(`${key} must be an object`);
  return v;
}

class Peer {
  constructor(id, socket, room) {
    Object.assign(this, { id, socket, room });
    this.granted = false; // set by ask_to_speak; publish needs it
    this.left = false;
    this.transports = new Map();
    this.producers = new Map();
    this.consumers = new Map();
  }

  transport(id, role) {
    const t = this.transports.get(id);
    if (!t) throw new ClientError('unknown transport_id');
    if (role && t.appData.role !== role) throw new ClientError(`transport_id is a ${t.appData.role} transport, need ${role}`);
    return t;
  }
}

class Sfu {
  /** worker: a mediasoup Worker; nsp: the Socket.IO namespace; listenIp/announcedIp: for WebRtcTransports. */
  constructor({ worker, nsp, listenIp, announcedIp, log }) {
    Object.assign(this, { worker, nsp, listenIp, announcedIp, log });
    this.rooms = new Map(); // room id → {id, ref, router, peers: Map, channel, closed}
    this.opening = new Map(); // room id → Promise<room>: concurrent open_room calls share one router
    this.handlers = {
      open_room: (s, p) => this._openRoom(s, p),
      enter: (s, p) => this._enter(s, p),
      ask_to_speak: (s) => {
        this._peer(s).granted = true;
        return 'granted';
      },
      make_transport: (s, p) => this._makeTransport(s, p),
      link_transport: async (s, p) => {
        await this._peer(s).transport(str(p, 'transport_id')).connect({ dtlsParameters: obj(p, 'dtls_parameters') });
        return 'linked';
      },
      publish: (s, p) => this._publish(s, p),
      subscribe: (s, p) => this._subscribe(s, p),
    };
  }

  /** Wire one authenticated socket (socket.data.peerId/roomId come from the token). */
  attach(socket) {
    const state = { socket, peer: null };
    for (const event of Object.keys(this.handlers)) {
      socket.on(event, async (payload, ack) => {
        if (typeof ack !== 'function' && typeof payload === 'function') [payload, ack] = [undefined, payload];
        if (typeof ack !== 'function') return; // no ack callback: there is nobody to answer
        let answer;
        try {
          answer = await this._dispatch(state, event, payload);
        } catch (err) {
          if (!(err instanceof ClientError)) this.log(`${event} from ${socket.data.peerId} failed: ${err && err.stack}`);
          answer = { error: err && err.message ? err.message : String(err) };
        }
        try {
          ack(answer);
        } catch (err) {
          this.log(`${event}: cannot send the answer: ${err.message}`);
        }
      });
    }
    socket.on('disconnect', () => this._leave(state));
  }

  async _dispatch(state, event, payload) {
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      return { error: 'payload must be an object' };
    }
    // room_id on every request, checked against the token: the token is what admits a peer to a room.
    if (typeof payload.room_id !== 'string' || payload.room_id === '') return { error: 'room_id required' };
    if (payload.room_id !== state.socket.data.roomId) return { error: 'room_id does not match token' };
    return this.handlers[event](state, payload);
  }

  _peer(state) {
    if (!state.peer) throw new ClientError('enter the room first');
    return state.peer;
  }

  async _room(id) {
    const existing = this.rooms.get(id);
    if (existing && !existing.closed) return existing;
    if (this.opening.has(id)) return this.opening.get(id);
    const p = this.worker.createRouter({ mediaCodecs: MEDIA_CODECS })
      .then((router) => {
        const room = { id, ref: randomBytes(12).toString('hex'), router, peers: new Map(), channel: `room:${id}`, closed: false };
        this.rooms.set(id, room);
        setTimeout(() => {
          if (room.peers.size === 0) this._closeRoom(room);
        }, UNENTERED_ROOM_MS).unref();
        return room;
      })
      .finally(() => this.opening.delete(id));
    this.opening.set(id, p);
    return p;
  }

  _closeRoom(room) {
    if (room.closed) return;
    room.closed = true;
    if (this.rooms.get(room.id) === room) this.rooms.delete(room.id);
    room.router.close(); // closes every transport, producer and consumer on it
  }

  async _openRoom(state, p) {
    const room = await this._room(p.room_id);
    return { room_ref: room.ref };
  }

  async _enter(state, p) {
    const room = this.rooms.get(p.room_id);
    if (typeof p.room_ref !== 'string' || !room || room.ref !== p.room_ref) throw new ClientError('unknown room_ref');
    if (p.peer_id !== state.socket.data.peerId) throw new ClientError('peer_id does not match token');
    if (state.peer) throw new ClientError('already entered');
    if (room.peers.has(p.peer_id)) throw new ClientError('peer_id is already in the room');
    if (!state.socket.connected) throw new ClientError('disconnected');
    const peer = new Peer(p.peer_id, state.socket, room);
    room.peers.set(peer.id, peer);
    state.peer = peer;
    state.socket.join(room.channel);
    return { router_caps: room.router.rtpCapabilities, present: this._announcements(room) };
  }

  async _makeTransport(state, p) {
    const peer = this._peer(state);
    if (p.role !== 'producer' && p.role !== 'consumer') throw new ClientError('role must be "producer" or "consumer"');
    const transport = await peer.room.router.createWebRtcTransport({
      listenIps: [{ ip: this.listenIp, announcedIp: this.announcedIp }],
      enableUdp: true,
      enableTcp: false,
      appData: { role: p.role, peerId: peer.id },
    });
    if (peer.left) { // the socket went away while the worker created it: nobody will close it later
      transport.close();
      throw new ClientError('peer left');
    }
    peer.transports.set(transport.id, transport);
    transport.observer.on('close', () => peer.transports.delete(transport.id));
    return {
      transport_id: transport.id,
      ice: { parameters: transport.iceParameters, candidates: transport.iceCandidates },
      dtls: transport.dtlsParameters,
    };
  }

  async _publish(state, p) {
    const peer = this._peer(state);
    // The grant is checked first: a refused publish must say why, whatever else is wrong with it.
    if (!peer.granted) throw new ClientError('not allowed to publish: ask_to_speak first');
    const transport = peer.transport(str(p, 'transport_id'), 'producer');
    if (p.kind !== 'audio' && p.kind !== 'video') throw new ClientError('kind must be "audio" or "video"');
    const producer = await transport.produce({
      kind: p.kind,
      rtpParameters: obj(p, 'rtp_parameters'),
      appData: { ...obj(p, 'app_data', true), peerId: peer.id },
    });
    peer.producers.set(producer.id, producer);
    producer.observer.on('close', () => peer.producers.delete(producer.id));
    this._broadcast(peer.room);
    return { producer_id: producer.id };
  }

  async _subscribe(state, p) {
    const peer = this._peer(state);
    const transport = peer.transport(str(p, 'transport_id'), 'consumer');
    const producerId = str(p, 'producer_id');
    const rtpCapabilities = obj(p, 'rtp_capabilities');
    const known = [...peer.room.peers.values()].some((other) => other.producers.has(producerId));
    if (!known) throw new ClientError('unknown producer_id');
    if (!peer.room.router.canConsume({ producerId, rtpCapabilities })) {
      throw new ClientError('rtp_capabilities cannot receive this producer');
    }
    // Not paused: this dialect has no resume request, media flows as soon as the transport does.
    const consumer = await transport.consume({ producerId, rtpCapabilities, paused: false });
    peer.consumers.set(consumer.id, consumer);
    consumer.observer.on('close', () => peer.consumers.delete(consumer.id));
    return { consumer_id: consumer.id, producer_id: producerId, kind: consumer.kind, rtp_parameters: consumer.rtpParameters };
  }

  _announcements(room) {
    const list = [];
    for (const peer of room.peers.values()) {
      for (const producer of peer.producers.values()) {
        list.push({ producer_id: producer.id, peer_id: peer.id, kind: producer.kind });
      }
    }
    return list;
  }

  /** The full producer list to every peer of the room, the publisher included (state, not deltas). */
  _broadcast(room) {
    this.nsp.to(room.channel).emit('producers_changed', this._announcements(room));
  }

  _leave(state) {
    const peer = state.peer;
    if (!peer) return;
    state.peer = null;
    peer.left = true;
    const hadProducers = peer.producers.size > 0;
    for (const t of peer.transports.values()) t.close(); // closes its producers and consumers
    const room = peer.room;
    if (room.peers.get(peer.id) === peer) room.peers.delete(peer.id);
    if (room.peers.size === 0) this._closeRoom(room);
    else if (hadProducers) this._broadcast(room); // the others learn the producer is gone
  }

  stats() {
    const out = { rooms: this.rooms.size, peers: 0, transports: 0, producers: 0, consumers: 0 };
    for (const room of this.rooms.values()) {
      for (const peer of room.peers.values()) {
        out.peers += 1;
        out.transports += peer.transports.size;
        out.producers += peer.producers.size;
        out.consumers += peer.consumers.size;
      }
    }
    return out;
  }

  close() {
    for (const room of [...this.rooms.values()]) this._closeRoom(room);
  }
}

module.exports = { Sfu };
