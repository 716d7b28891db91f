'use strict';
// The rooms' directory in Redis, shared by every gateway replica (cluster mode only):
//   speechload:room:<roomId>:producers  hash producerId → JSON {id, peerId, kind, appData, node}
//   speechload:room:<roomId>:peers      hash peerId → JSON {node, role, targetLanguage}
// A replica writes its own producers and peers and reads the others', so a room's announcements
// (joinRoom.producers, getProducers) list the producers of the whole room, and a peer's consume of a
// producer living on another replica learns which replica to ask for a pipe (pipes.js); a mic's
// session learns the target languages of the room's listeners on other replicas. Entries of a
// replica that stopped being heard from (crashed without cleaning up) are ignored.
//
// Redis trouble must not stop signaling: every operation is bounded, and on failure it logs and
// answers as if the room lived on this replica alone (what a standalone gateway does).

const { logger } = require('./logger');

const log = logger('directory');
const OP_TIMEOUT_MS = 1000;

function key(roomId, what) {
  return `speechload:room:${roomId}:${what}`;
}

function parse(raw) {
  try {
    const v = JSON.parse(raw);
    return v && typeof v === 'object' && typeof v.node === 'string' ? v : null;
  } catch {
    return null;
  }
}

class RoomDirectory {
  /** @param {object|null} coordination null: no directory (every call answers "this replica only") */
  constructor(coordination) {
    this.coordination = coordination;
  }

  get nodeId() {
    return this.coordination ? this.coordination.nodeId : null;
  }

  /** Run `fn(client)` bounded by OP_TIMEOUT_MS; `fallback` when standalone or on failure. */
  async _op(what, fn, fallback) {
    const client = this.coordination ? this.coordination.client : null;
    if (!client) return fallback;
    let timer = null;
    const timeout = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${OP_TIMEOUT_MS} ms`)), OP_TIMEOUT_MS);
    });
    try {
      return await Promise.race([fn(client), timeout]);
    } catch (err) {
      log.warn(`${what} failed (${err.message}): answering for this replica only`);
      return fallback;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Another live replica's entry (this replica's own are known locally). */
  _remote(entry) {
    return entry !== null && entry.node !== this.nodeId && this.coordination.isLive(entry.node);
  }

  /** List ProducerInfos of this replica in the room (before they are announced). */
  addProducers(roomId, infos) {
    const fields = Object.fromEntries(infos.map((info) => [info.id, JSON.stringify({ ...info, node: this.nodeId })]));
    return this._op(`listing producers of room ${roomId}`, (c) => c.hSet(key(roomId, 'producers'), fields), null);
  }

  removeProducers(roomId, ids) {
    return this._op(`unlisting producers of room ${roomId}`, (c) => c.hDel(key(roomId, 'producers'), ids), null);
  }

  /** Producers of the room on the other live replicas: [{id, peerId, kind, appData, node}]. */
  async remoteProducers(roomId) {
    const all = await this._op(`reading producers of room ${roomId}`, (c) => c.hGetAll(key(roomId, 'producers')), {});
    return Object.values(all).map(parse).filter((e) => this._remote(e));
  }

  /** One producer of another live replica, or null. */
  async remoteProducer(roomId, producerId) {
    const raw = await this._op(`looking up producer ${producerId}`, (c) => c.hGet(key(roomId, 'producers'), producerId), null);
    const entry = raw === null ? null : parse(raw);
    return this._remote(entry) ? entry : null;
  }

  /**
   * Claim `peerId` in the room for this replica. Resolves null when claimed (or already this
   * replica's: a duplicate on this replica is the room's to refuse), else the node id of the live
   * replica that holds the peer.
   */
  async claimPeer(roomId, peerId, role, targetLanguage = null) {
    const value = JSON.stringify({ node: this.nodeId, role, targetLanguage });
    return this._op(`claiming peer ${peerId} in room ${roomId}`, async (c) => {
      const k = key(roomId, 'peers');
      if (await c.hSetNX(k, peerId, value)) return null;
      const holder = parse(await c.hGet(k, peerId));
      if (this._remote(holder)) return holder.node;
      await c.hSet(k, peerId, value); // left behind by a replica that is gone
      return null;
    }, null);
  }

  /** Target languages of the room's listeners on the other live replicas. */
  async listenerLanguages(roomId) {
    const all = await this._op(`reading peers of room ${roomId}`, (c) => c.hGetAll(key(roomId, 'peers')), {});
    const langs = Object.values(all).map(parse)
      .filter((e) => this._remote(e) && e.role === 'listener' && typeof e.targetLanguage === 'string' && e.targetLanguage)
      .map((e) => e.targetLanguage);
    return [...new Set(langs)];
  }

  releasePeer(roomId, peerId) {
    return this._op(`releasing peer ${peerId} in room ${roomId}`, (c) => c.hDel(key(roomId, 'peers'), peerId), null);
  }
}

module.exports = { RoomDirectory };
