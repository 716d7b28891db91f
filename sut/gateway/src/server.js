'use strict';
// Gateway entry point: `node sut/gateway/src/server.js --config <state_dir>/gateway.json`.
// HTTP (/health, /metrics) and Socket.IO signaling on one plain-HTTP port (the TLS proxy fronts
// it), mediasoup workers for media, the speech pipeline per mic producer.

const crypto = require('crypto');
const http = require('http');
const { Server: IoServer } = require('socket.io');
const { loadConfig, ConfigError } = require('./config');
const { logger, setLevel } = require('./logger');
const { WorkerPool } = require('./workers');
const { Signaling } = require('./signaling');
const { Backends } = require('./backends');
const { warmUpOpus } = require('./inject');
const { GroundTruth } = require('./groundtruth');
const { createMetrics, Gauge } = require('./metrics');
const { Coordination } = require('./coordination');
const { ReplicaRpc } = require('./rpc');
const { RoomDirectory } = require('./directory');
const { PipeHub } = require('./pipes');
const { nowS } = require('./clock');

const log = logger('server');
const HEALTH_CACHE_MS = 1000;

function parseArgs(argv) {
  const i = argv.indexOf('--config');
  if (i < 0 || !argv[i + 1]) throw new ConfigError('usage: node server.js --config <gateway.json>');
  return { configPath: argv[i + 1] };
}

class Gateway {
  constructor(config) {
    this.config = config;
    this.startedS = nowS();
    this.metrics = createMetrics();
    this.pool = new WorkerPool();
    this.groundTruth = new GroundTruth(config.groundTruthPath);
    this.backends = new Backends({ services: config.services, timeoutMs: config.requestTimeoutMs, metrics: this.metrics });
    this.healthCache = null;
    this.http = http.createServer((req, res) => this._onHttp(req, res));
    this.io = new IoServer(this.http, { path: '/socket.io/', serveClient: false });
    if (config.sessionIdPrefix) {
      // Replicas behind one proxy: the session id names its replica (the proxy routes on it).
      this.io.engine.generateId = () => `${config.sessionIdPrefix}${crypto.randomBytes(15).toString('base64url')}`;
    }
    this.coordination = new Coordination({ redis: config.redis, io: this.io });
    this.rpc = new ReplicaRpc({ coordination: this.coordination, metrics: this.metrics });
    this.pipes = null;
    this.signaling = null;
  }

  async start() {
    const { config } = this;
    // mediasoup's own log level: keep the worker quiet unless we debug.
    const workerLog = config.logLevel === 'debug' ? 'debug' : config.logLevel === 'info' ? 'warn' : 'error';
    await this.pool.start({ count: config.numWorkers, rtcMinPort: config.rtcMinPort, rtcMaxPort: config.rtcMaxPort, logLevel: workerLog });
    this.pool.onDied = () => {
      // Rooms on the dead worker close through their routers' 'close' observers (signaling.js).
      this.healthCache = null;
    };
    // Before signaling and listening: with Redis, the Socket.IO adapter must be in place first.
    await this.coordination.start(() => ({
      rooms: this.signaling ? this.signaling.roomCount : 0,
      peers: this.signaling ? this.signaling.peerCount : 0,
    }));
    // Rooms spanning replicas: their producers listed in Redis, their media piped between replicas.
    await this.rpc.start();
    if (this.rpc.available) {
      this.pipes = new PipeHub({
        rpc: this.rpc, host: config.host, metrics: this.metrics, rooms: (id) => this.signaling.rooms.get(id),
      });
      this.coordination.nodeGone.push((node) => this.pipes.nodeGone(node));
    }
    this.signaling = new Signaling({
      io: this.io,
      coordination: this.coordination,
      directory: new RoomDirectory(this.coordination),
      pipes: this.pipes,
      config,
      pool: this.pool,
      backends: this.backends,
      groundTruth: this.groundTruth,
      metrics: this.metrics,
    });
    await this._warmUp();
    const r = this.metrics.registry;
    r.add(new Gauge('gateway_rooms', 'Open rooms', () => this.signaling.roomCount));
    r.add(new Gauge('gateway_peers', 'Joined peers', () => this.signaling.peerCount));
    r.add(new Gauge('gateway_producers', 'Producers (mic and TTS)', () => this._sum((room) => room.producerCount)));
    r.add(new Gauge('gateway_pipelines', 'Mic producers with a running speech pipeline', () => this._sum((room) => room.sessions.size)));
    r.add(new Gauge('gateway_workers_alive', 'Live mediasoup workers', () => this.pool.status().filter((w) => w.alive).length));
    r.add(new Gauge('gateway_uptime_seconds', 'Seconds since start', () => nowS() - this.startedS));
    r.add(new Gauge('gateway_redis_connected', 'Redis room coordination connected (1) or not (0: standalone)',
      () => (this.coordination.connected ? 1 : 0)));
    r.add(new Gauge('gateway_cluster_nodes', 'Gateway replicas heard from through Redis (0: standalone)',
      () => this.coordination.liveNodes().length));
    r.add(new Gauge('gateway_pipe_transports', 'Open PipeTransports to other gateway replicas (one per room per replica)',
      () => (this.pipes ? this.pipes.transportCount : 0)));
    await new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(config.port, config.host, () => {
        this.http.removeListener('error', reject);
        resolve();
      });
    });
    const address = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${this.http.address().port}`;
    this.coordination.address = address;
    log.info(`gateway listening on ${address} (announced media IP ${config.announcedIp}, node ${this.coordination.nodeId})`);
    // Announce again now that start-up work is done: the pub/sub round trip /health reports is then
    // Redis's, not the start-up's busy event loop.
    this.coordination.beat();
  }

  /**
   * Pay one-time costs before the first caller does: Opus codec compilation (opus.js) and the
   * first requests to the backends (keep-alive connections). Also logs which backends answer.
   */
  async _warmUp() {
    warmUpOpus();
    const names = ['stt', 'translation', 'tts'];
    const states = await Promise.all(names.map((n) => this.backends.health(n)));
    const line = names.map((n, i) => `${n}=${states[i]} (${this.config.services[n]})`).join(', ');
    (states.every((st) => st === 'ok') ? log.info : log.warn)(`backends: ${line}`);
  }

  _sum(fn) {
    let n = 0;
    for (const room of this.signaling.rooms.values()) n += fn(room);
    return n;
  }

  _onHttp(req, res) {
    const url = new URL(req.url, 'http://gateway');
    if (req.method === 'GET' && url.pathname === '/health') {
      this._health().then((body) => this._send(res, 200, 'application/json', JSON.stringify(body)),
        (err) => this._send(res, 500, 'application/json', JSON.stringify({ status: 'error', error: err.message })));
    } else if (req.method === 'GET' && url.pathname === '/metrics') {
      this._send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', this.metrics.registry.render());
    } else if (!url.pathname.startsWith('/socket.io/')) {
      this._send(res, 404, 'application/json', JSON.stringify({ error: `no route ${req.method} ${url.pathname}` }));
    } // socket.io answers its own path
  }

  _send(res, status, type, body) {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  }

  /** Health with backend probes, cached briefly so frequent polling does not load the services. */
  async _health() {
    const now = Date.now();
    if (!this.healthCache || now - this.healthCache.at > HEALTH_CACHE_MS) {
      const names = ['stt', 'translation', 'tts'];
      const states = await Promise.all(names.map((n) => this.backends.health(n)));
      this.healthCache = { at: now, backends: Object.fromEntries(names.map((n, i) => [n, states[i]])) };
    }
    const { backends } = this.healthCache;
    const ok = this.pool.allAlive && Object.values(backends).every((s) => s === 'ok');
    return {
      status: ok ? 'ok' : 'degraded',
      uptimeS: Math.round((nowS() - this.startedS) * 1000) / 1000,
      rooms: this.signaling.roomCount,
      peers: this.signaling.peerCount,
      workers: this.pool.status(),
      backends,
      // Standalone does not make the status "degraded": like the production gateway this models, it
      // serves on as a single node. This section says so, for audits to read.
      redis: this.coordination.status(),
      // Every replica of the cluster (this one first); standalone: this one alone.
      replicas: this.coordination.members(),
    };
  }

  async stop() {
    log.info('shutting down');
    this.io.close(); // disconnects sockets: peers leave, rooms close
    if (this.signaling) this.signaling.close();
    this.pool.close();
    this.metrics.loopDelay.stop();
    this.rpc.close();
    await this.coordination.close();
    await new Promise((resolve) => this.http.close(() => resolve()));
    await this.groundTruth.close();
  }
}

async function main() {
  let config;
  try {
    const { configPath } = parseArgs(process.argv.slice(2));
    const loaded = loadConfig(configPath);
    config = loaded.config;
    setLevel(config.logLevel);
    if (loaded.unknownKeys.length) log.warn(`ignoring unknown config keys: ${loaded.unknownKeys.join(', ')}`);
  } catch (err) {
    process.stderr.write(`gateway: ${err.message}\n`);
    process.exit(2);
  }
  const gateway = new Gateway(config);
  try {
    await gateway.start();
  } catch (err) {
    log.error('startup failed:', err.message);
    gateway.pool.close();
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal} received`);
    // Bounded: a stuck close must not keep the process alive.
    setTimeout(() => process.exit(0), 3000).unref();
    gateway.stop().then(() => process.exit(0), (err) => {
      log.error('shutdown error:', err);
      process.exit(1);
    });
  };
  // A bug in one call's handling must not end every call: log it loudly and keep serving.
  process.on('unhandledRejection', (err) => log.error('unhandled promise rejection:', err));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

if (require.main === module) main();

module.exports = { Gateway };
