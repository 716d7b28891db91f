'use strict';
// Requests between gateway replicas over Redis pub/sub (cluster mode only). Each replica listens on
// its own inbox channel, `speechload:gateway:node:<nodeId>`. A request {type: 'req', id, from, method,
// params} goes to the callee's inbox; its answer {type: 'res', id, ok, data | error} to the caller's.
// A notification ({type: 'note'}) gets no answer. Every request is bounded by a timeout: a replica
// that died, or never got the message, fails the caller's request instead of hanging it.

const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('rpc');
const INBOX_PREFIX = 'speechload:gateway:node:';
const REQUEST_TIMEOUT_MS = 3000;

function inbox(nodeId) {
  return `${INBOX_PREFIX}${nodeId}`;
}

class ReplicaRpc {
  /** @param {object} o coordination (Coordination), metrics, timeoutMs */
  constructor({ coordination, metrics, timeoutMs = REQUEST_TIMEOUT_MS }) {
    Object.assign(this, { coordination, metrics, timeoutMs });
    this.handlers = new Map(); // method → async (params, fromNode) => data
    this.pending = new Map(); // request id → {resolve, reject, timer, method, t0}
    this.seq = 0;
  }

  get available() {
    return this.coordination.client !== null;
  }

  get nodeId() {
    return this.coordination.nodeId;
  }

  /** Subscribe to this replica's inbox (a no-op when standalone). */
  async start() {
    if (!this.available) return;
    await this.coordination.subscribe(inbox(this.nodeId), (raw) => this._onMessage(raw));
  }

  /** Serve `method` (requests and notifications alike); a throw becomes the caller's error. */
  handle(method, fn) {
    this.handlers.set(method, fn);
  }

  /** Ask replica `node`; resolves with its data, rejects with its error or after the timeout. */
  request(node, method, params, timeoutMs = this.timeoutMs) {
    if (!this.available) return Promise.reject(new Error(`${method}: replica ${node} unreachable (no Redis: standalone)`));
    this.seq += 1;
    const id = `${this.nodeId}:${this.seq}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this._settle(id, new Error(`${method}: replica ${node} did not answer within ${timeoutMs} ms`),
        null, 'timeout'), timeoutMs);
      this.pending.set(id, { resolve, reject, timer, method, t0: nowMs() });
      this._send(node, { type: 'req', id, from: this.nodeId, method, params })
        .catch((err) => this._settle(id, new Error(`${method}: cannot publish to replica ${node}: ${err.message}`)));
    });
  }

  /** Tell replica `node` something; no answer, failures only logged. */
  notify(node, method, params) {
    if (!this.available) return;
    this._send(node, { type: 'note', from: this.nodeId, method, params })
      .catch((err) => log.warn(`${method} to replica ${node} not sent: ${err.message}`));
  }

  _send(node, message) {
    return this.coordination.client.publish(inbox(node), JSON.stringify(message));
  }

  _settle(id, err, data, result = err ? 'error' : 'ok') {
    const p = this.pending.get(id);
    if (!p) return; // answered after its timeout, or twice
    this.pending.delete(id);
    clearTimeout(p.timer);
    this.metrics.replicaRpc.inc({ method: p.method, result });
    this.metrics.replicaRpcLatency.observe({ method: p.method }, (nowMs() - p.t0) / 1000);
    if (err) p.reject(err);
    else p.resolve(data);
  }

  _onMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return log.warn(`ignoring a malformed replica message: ${String(raw).slice(0, 80)}`);
    }
    if (msg.type === 'res') {
      this._settle(msg.id, msg.ok ? null : new Error(`replica: ${msg.error}`), msg.data);
      return;
    }
    if (msg.type !== 'req' && msg.type !== 'note') return;
    const handler = this.handlers.get(msg.method);
    const run = handler
      ? Promise.resolve().then(() => handler(msg.params || {}, msg.from))
      : Promise.reject(new Error(`unknown method ${JSON.stringify(msg.method)}`));
    run.then((data) => {
      if (msg.type === 'req') this._reply(msg, { ok: true, data: data || {} });
    }, (err) => {
      const error = err && err.message ? err.message : String(err);
      if (msg.type === 'req') this._reply(msg, { ok: false, error });
      else log.warn(`${msg.method} from replica ${msg.from} failed: ${error}`);
    });
  }

  _reply(msg, body) {
    if (!this.available || typeof msg.from !== 'string') return;
    this._send(msg.from, { type: 'res', id: msg.id, ...body })
      .catch((err) => log.warn(`answer to ${msg.method} from replica ${msg.from} not sent: ${err.message}`));
  }

  /** Fail every request still waiting (shutdown). */
  close() {
    for (const id of [...this.pending.keys()]) this._settle(id, new Error('gateway shutting down'));
  }
}

module.exports = { ReplicaRpc, REQUEST_TIMEOUT_MS };
