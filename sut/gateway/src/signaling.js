'use strict';
// Socket.IO request handlers (docs/protocol.md). Every request is acknowledged with exactly one
// {ok: true, data} or {ok: false, error}; a handler never leaves the client waiting.

const { Room, Peer, RequestError } = require('./room');
const { RoomDirectory } = require('./directory');
const { logger } = require('./logger');

const log = logger('signaling');

function requireString(payload, key, event) {
  const v = payload[key];
  if (typeof v !== 'string' || v.length === 0) {
    throw new RequestError(`${event}: "${key}" must be a non-empty string, got ${JSON.stringify(v)}`);
  }
  return v;
}

function requireObject(payload, key, event) {
  const v = payload[key];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new RequestError(`${event}: "${key}" must be an object`);
  }
  return v;
}

class Signaling {
  /**
   * deps: io, config, pool (WorkerPool), backends, groundTruth, metrics; optional: coordination,
   * directory (RoomDirectory: rooms spanning replicas), pipes (PipeHub: their media)
   */
  constructor(deps) {
    this.deps = { directory: new RoomDirectory(null), pipes: null, coordination: null, ...deps };
    this.rooms = new Map(); // roomId → Room
    this.creating = new Map(); // roomId → Promise<Room>, so concurrent joins share one Router
    this.peerCount = 0;
    this.deps.io.on('connection', (socket) => this._onConnection(socket));
  }

  async _room(roomId) {
    const existing = this.rooms.get(roomId);
    if (existing && !existing.closed) return existing;
    if (this.creating.has(roomId)) return this.creating.get(roomId);
    const { pool, ...roomDeps } = this.deps;
    const worker = pool.acquire();
    const p = Room.create(roomId, worker, roomDeps)
      .then((room) => {
        this.rooms.set(roomId, room);
        room.router.observer.on('close', () => this._dropRoom(room));
        log.info(`room ${roomId} created (worker pid ${worker.pid})`);
        this._announce('room-open', { room: roomId });
        return room;
      })
      .catch((err) => {
        pool.release(worker);
        throw err;
      })
      .finally(() => this.creating.delete(roomId));
    this.creating.set(roomId, p);
    return p;
  }

  _dropRoom(room) {
    if (this.rooms.get(room.id) !== room) return;
    this.rooms.delete(room.id);
    this.deps.pool.release(room.worker);
    room.close();
    this._announce('room-close', { room: room.id });
    // Peers still inside (the worker died): their media is gone, tell them by disconnecting.
    for (const peer of room.peers.values()) peer.socket.disconnect(true);
    log.info(`room ${room.id} closed`);
  }

  _onConnection(socket) {
    const state = { peer: null, room: null };
    const handlers = {
      joinRoom: (p) => this._join(socket, state, p),
      createWebRtcTransport: (p) => {
        const direction = p.direction;
        if (direction !== 'send' && direction !== 'recv') {
          throw new RequestError(`createWebRtcTransport: "direction" must be "send" or "recv", got ${JSON.stringify(direction)}`);
        }
        return state.room.createWebRtcTransport(state.peer, direction);
      },
      connectWebRtcTransport: async (p) => {
        await state.room.connectWebRtcTransport(state.peer, requireString(p, 'transportId', 'connectWebRtcTransport'),
          requireObject(p, 'dtlsParameters', 'connectWebRtcTransport'));
        return {};
      },
      produce: (p) => state.room.produce(state.peer, {
        transportId: requireString(p, 'transportId', 'produce'),
        kind: p.kind,
        rtpParameters: requireObject(p, 'rtpParameters', 'produce'),
      }),
      consume: (p) => state.room.consume(state.peer, {
        transportId: requireString(p, 'transportId', 'consume'),
        producerId: requireString(p, 'producerId', 'consume'),
        rtpCapabilities: requireObject(p, 'rtpCapabilities', 'consume'),
      }),
      resumeConsumer: async (p) => {
        await state.room.resumeConsumer(state.peer, requireString(p, 'consumerId', 'resumeConsumer'));
        return {};
      },
      getProducers: async () => ({ producers: await state.room.listProducers(state.peer) }),
      leaveRoom: () => {
        this._leave(state);
        return {};
      },
    };

    for (const [event, handler] of Object.entries(handlers)) {
      socket.on(event, async (payload, ack) => {
        if (typeof ack !== 'function') {
          if (typeof payload === 'function') [payload, ack] = [{}, payload];
          else return log.warn(`${event} from ${socket.id} without an ack callback: ignored`);
        }
        try {
          if (payload === undefined || payload === null) payload = {};
          if (typeof payload !== 'object' || Array.isArray(payload)) throw new RequestError(`${event}: payload must be an object`);
          if (event !== 'joinRoom' && !state.room) throw new RequestError(`${event}: join a room first (joinRoom)`);
          const data = await handler(payload);
          this.deps.metrics.socketRequests.inc({ event, result: 'ok' });
          ack({ ok: true, data: data || {} });
        } catch (err) {
          this.deps.metrics.socketRequests.inc({ event, result: 'error' });
          const message = err && err.message ? err.message : String(err);
          if (err instanceof RequestError) log.debug(`${event} from ${socket.id} rejected: ${message}`);
          else log.warn(`${event} from ${socket.id} failed:`, err);
          ack({ ok: false, error: message });
        }
      });
    }
    socket.on('disconnect', (reason) => {
      if (state.peer) log.info(`peer ${state.peer.id} disconnected (${reason})`);
      this._leave(state);
    });
  }

  async _join(socket, state, p) {
    if (state.room) throw new RequestError(`joinRoom: already in room ${JSON.stringify(state.room.id)}; leaveRoom first`);
    const roomId = requireString(p, 'roomId', 'joinRoom');
    const peerId = requireString(p, 'peerId', 'joinRoom');
    if (p.role !== 'speaker' && p.role !== 'listener') {
      throw new RequestError(`joinRoom: "role" must be "speaker" or "listener", got ${JSON.stringify(p.role)}`);
    }
    for (const key of ['sourceLanguage', 'targetLanguage']) {
      if (p[key] !== undefined) requireString(p, key, 'joinRoom');
    }
    const { directory } = this.deps;
    const sourceLanguage = p.sourceLanguage || this.deps.config.sourceLanguage;
    const targetLanguage = p.targetLanguage || this.deps.config.targetLanguage;
    // peerId is unique in the room across replicas, too (a duplicate here is the room's to refuse).
    const holder = await directory.claimPeer(roomId, peerId, p.role, targetLanguage);
    if (holder) throw new RequestError(`peerId ${JSON.stringify(peerId)} is already in room ${JSON.stringify(roomId)} (on gateway replica ${holder})`);
    let room = await this._room(roomId);
    if (room.closed) room = await this._room(roomId); // emptied and closed while we awaited it
    if (!socket.connected) {
      directory.releasePeer(roomId, peerId);
      if (room.peers.size === 0) this._dropRoom(room);
      throw new RequestError('joinRoom: socket disconnected while joining');
    }
    const peer = new Peer({
      id: peerId,
      socket,
      role: p.role,
      sourceLanguage,
      targetLanguage,
    });
    try {
      room.addPeer(peer);
    } catch (err) {
      if (room.peers.size === 0) this._dropRoom(room);
      throw err;
    }
    state.peer = peer;
    state.room = room;
    this.peerCount += 1;
    log.info(`peer ${peerId} (${p.role}) joined room ${roomId}`);
    this._announce('peer-join', { room: roomId, peer: peerId });
    if (peer.role === 'listener') {
      // Its language, if new to the room, gets a TTS producer per session before the answer lists them.
      if (this.deps.pipes) this.deps.pipes.languageWanted(roomId, targetLanguage);
      await room.serveLanguages();
    }
    // `node` names the replica this peer is on (the coordination node id; /health's redis.nodeId).
    const node = this.deps.coordination ? this.deps.coordination.nodeId : null;
    return { rtpCapabilities: room.router.rtpCapabilities, producers: await room.listProducers(peer), node };
  }

  _leave(state) {
    const { room, peer } = state;
    if (!room) return;
    state.room = null;
    state.peer = null;
    this.peerCount -= 1;
    this._announce('peer-leave', { room: room.id, peer: peer.id });
    this.deps.directory.releasePeer(room.id, peer.id);
    if (room.removePeer(peer)) this._dropRoom(room);
  }

  /** Room and peer changes to the other gateway replicas (through Redis, when coordinated). */
  _announce(kind, fields) {
    if (this.deps.coordination) this.deps.coordination.announce(kind, fields);
  }

  get roomCount() {
    return this.rooms.size;
  }

  close() {
    for (const room of [...this.rooms.values()]) this._dropRoom(room);
  }
}

module.exports = { Signaling };
