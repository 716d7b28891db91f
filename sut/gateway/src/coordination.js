'use strict';
// Room coordination across gateway replicas through Redis (optional; gateway.json `redis`).
//
// With Redis: Socket.IO broadcasts go through @socket.io/redis-adapter (a room's events reach its
// peers on every replica), and each replica announces itself, its rooms and peers on a pub/sub
// channel, so every replica knows the cluster. The gateway looks for Redis once, at start: when the
// host name does not resolve or the port refuses, it logs that and runs STANDALONE — it keeps
// serving, but rooms are not coordinated across replicas. That is the failure a production audit
// found (Redis configured as `redis`, the service called `redis_gateway`): nothing broke visibly, so
// /health's `redis` section states the mode for audits (loadtest preflight) to read.

const crypto = require('crypto');
const os = require('os');
const { createClient } = require('redis');
const { createAdapter } = require('@socket.io/redis-adapter');
const { logger } = require('./logger');
const { nowMs } = require('./clock');

const log = logger('coordination');
const CHANNEL = 'speechload:gateway:rooms';
const ADAPTER_KEY = 'speechload:socket.io';
const HEARTBEAT_MS = 5000;
const NODE_TTL_MS = 3 * HEARTBEAT_MS; // a replica silent for three heartbeats is gone
const CONNECT_TIMEOUT_MS = 2000;

function describe(err) {
  if (!err) return 'unknown error';
  if (err.errors && err.errors.length) return describe(err.errors[0]); // AggregateError (IPv4+IPv6 tries)
  return err.message || err.code || String(err);
}

class Coordination {
  /** @param {object} o redis {host, port} | null; io the Socket.IO server */
  constructor({ redis, io }) {
    this.redis = redis;
    this.io = io;
    this.nodeId = `${os.hostname()}-${process.pid}-${crypto.randomBytes(2).toString('hex')}`;
    this.mode = 'standalone';
    this.connected = false;
    this.error = null;
    this.clients = [];
    this.nodes = new Map(); // nodeId → {rooms, peers, seenMs}
    this.echoMs = null; // our own heartbeat back through Redis: the pub/sub round trip
    this.heartbeat = null;
    this.counts = () => ({ rooms: 0, peers: 0 });
    this.address = null; // this replica's own HTTP address, told to the others in its heartbeat
    this.nodeGone = []; // callbacks (nodeId) when a replica says goodbye
  }

  /** The command client (rooms' directory, rpc.js); null when standalone. Commands issued while a
   * connection is lost wait for the reconnect: callers bound them. */
  get client() {
    return this.mode === 'cluster' ? this.clients[0] : null;
  }

  /** Listen on one more pub/sub channel (cluster mode only). */
  async subscribe(channel, onMessage) {
    await this.clients[1].subscribe(channel, onMessage);
  }

  /** This replica, or another heard from within the node TTL. */
  isLive(nodeId) {
    if (nodeId === this.nodeId) return true;
    const node = this.nodes.get(nodeId);
    return Boolean(node) && nowMs() - node.seenMs <= NODE_TTL_MS;
  }

  get configured() {
    return this.redis ? `${this.redis.host}:${this.redis.port}` : null;
  }

  /** Connect (bounded) or settle for standalone; never throws. `counts()` → {rooms, peers} of this node. */
  async start(counts) {
    this.counts = counts;
    if (!this.redis) {
      log.info('no Redis configured: single-node gateway');
      return;
    }
    let everReady = false;
    const pub = createClient({
      socket: {
        host: this.redis.host,
        port: this.redis.port,
        connectTimeout: CONNECT_TIMEOUT_MS,
        // Before the first connection give up at once (standalone); after it, keep reconnecting.
        reconnectStrategy: (retries, cause) => (everReady ? Math.min(100 * 2 ** retries, 2000) : cause),
      },
    });
    const sub = pub.duplicate();
    this.clients = [pub, sub];
    for (const client of this.clients) {
      // node-redis throws on an 'error' event without a listener; after start, a lost connection
      // is a state the health report shows while the client reconnects.
      client.on('error', (err) => {
        if (!everReady) return;
        if (this.connected) log.warn(`Redis ${this.configured} connection lost: ${describe(err)}; reconnecting`);
        this.connected = false;
        this.error = describe(err);
      });
      client.on('ready', () => {
        if (!everReady || this.connected) return;
        this.connected = this.clients.every((c) => c.isReady);
        if (this.connected) {
          this.error = null;
          log.info(`Redis ${this.configured} reconnected`);
        }
      });
    }
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      await sub.subscribe(CHANNEL, (message) => this._onMessage(message));
    } catch (err) {
      this.error = describe(err);
      log.warn(`Redis ${this.configured} unreachable (${this.error}): running STANDALONE — rooms are not `
        + 'coordinated across gateway replicas');
      await this._closeClients();
      return;
    }
    everReady = true;
    this.io.adapter(createAdapter(pub, sub, { key: ADAPTER_KEY }));
    this.connected = true;
    this.mode = 'cluster';
    log.info(`Redis ${this.configured} connected: cluster mode (node ${this.nodeId})`);
    this.beat();
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Tell the other replicas about a room or peer change (no-op when standalone). */
  announce(kind, fields) {
    if (!this.connected) return;
    const message = JSON.stringify({ node: this.nodeId, kind, sentMs: nowMs(), ...fields });
    this.clients[0].publish(CHANNEL, message).catch((err) => log.debug(`publish ${kind} failed: ${describe(err)}`));
  }

  /** Announce this replica (and time the pub/sub round trip of its own message). */
  beat() {
    this.announce('hello', { ...this.counts(), address: this.address });
  }

  _onMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return log.debug(`ignoring a malformed coordination message: ${String(raw).slice(0, 80)}`);
    }
    if (typeof msg.node !== 'string') return;
    if (msg.kind === 'bye') {
      this.nodes.delete(msg.node);
      if (msg.node !== this.nodeId) for (const fn of this.nodeGone) fn(msg.node);
      return;
    }
    const known = this.nodes.has(msg.node);
    const node = this.nodes.get(msg.node) || { rooms: 0, peers: 0, seenMs: 0, address: null };
    node.seenMs = nowMs();
    if (msg.kind === 'hello') {
      node.rooms = Number(msg.rooms) || 0;
      node.peers = Number(msg.peers) || 0;
      node.address = typeof msg.address === 'string' ? msg.address : null;
      // A replica new to us has not heard of us either (it just started): greet it now rather than
      // at our next heartbeat, so it can reach our rooms at once.
      if (!known && msg.node !== this.nodeId) this.beat();
      if (msg.node === this.nodeId && typeof msg.sentMs === 'number') this.echoMs = nowMs() - msg.sentMs;
    } else if (msg.kind === 'room-open') node.rooms += 1;
    else if (msg.kind === 'room-close') node.rooms = Math.max(0, node.rooms - 1);
    else if (msg.kind === 'peer-join') node.peers += 1;
    else if (msg.kind === 'peer-leave') node.peers = Math.max(0, node.peers - 1);
    this.nodes.set(msg.node, node);
  }

  /** Replicas heard from recently (this one included once its own heartbeat came back). */
  liveNodes() {
    const now = nowMs();
    return [...this.nodes].filter(([, n]) => now - n.seenMs <= NODE_TTL_MS);
  }

  status() {
    const live = this.liveNodes();
    const others = live.filter(([id]) => id !== this.nodeId);
    return {
      configured: this.configured,
      connected: this.connected,
      mode: this.mode,
      error: this.error,
      nodeId: this.nodeId,
      nodes: live.length,
      remoteRooms: others.reduce((n, [, node]) => n + node.rooms, 0),
      pubsubRoundTripMs: this.echoMs === null ? null : Math.round(this.echoMs * 1000) / 1000,
    };
  }

  /** Every replica of the cluster as /health lists them (this one alone when standalone). */
  members() {
    const self = { nodeId: this.nodeId, address: this.address, self: true, ...this.counts() };
    const others = this.liveNodes().filter(([id]) => id !== this.nodeId).map(([nodeId, n]) => ({
      nodeId, address: n.address, self: false, rooms: n.rooms, peers: n.peers,
      lastSeenS: Math.round(nowMs() - n.seenMs) / 1000,
    }));
    return [self, ...others];
  }

  async _closeClients() {
    const clients = this.clients;
    this.clients = [];
    await Promise.all(clients.map((c) => (c.isOpen ? c.quit().catch(() => c.disconnect().catch(() => {})) : null)));
  }

  async close() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.announce('bye', {});
    this.connected = false;
    await this._closeClients();
  }
}

module.exports = { Coordination };
