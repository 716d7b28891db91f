'use strict';
// Foreign SFU: a plain mediasoup gateway (no speech pipeline) whose signaling dialect is deliberately
// unlike the reference gateway's (docs/protocol.md), so the tester can be proven against a gateway it
// was not written for. Table form: sut/foreign/README.md.
//
// Transport: plain HTTP, Socket.IO path /rtc, namespace /sfu.
// Handshake (namespace middleware; a refusal is a connect_error whose message is the text):
//   Origin header must equal --allowed-origin             else "Origin not allowed"
//   query access_token: HS256 JWT signed with --jwt-secret else "invalid token: <reason>"
//     (exp checked when present; claims sub = peer id and room = room id are required)
// Requests: socket.emit(event, payload, ack). Keys are snake_case. Every payload carries room_id, which
// must equal the token's room ("room_id required" / "room_id does not match token"). Answers are bare:
// the data object or a plain string on success, {error: "<text>"} on failure; every ack is answered.
//   open_room      {room_id}                                   → {room_ref}
//   enter          {room_id, room_ref, peer_id (= token sub)}  → {router_caps, present: [Announcement]}
//   ask_to_speak   {room_id}                                   → "granted"
//   make_transport {room_id, role: "producer"|"consumer"}      → {transport_id, ice: {parameters, candidates}, dtls}
//   link_transport {room_id, transport_id, dtls_parameters}    → "linked"
//   publish        {room_id, transport_id, kind, rtp_parameters, app_data}  → {producer_id}
//                  (before ask_to_speak: {error: "not allowed to publish: ask_to_speak first"})
//   subscribe      {room_id, transport_id, producer_id, rtp_capabilities}
//                  → {consumer_id, producer_id, kind, rtp_parameters}; the consumer is NOT paused
//                  (there is no resume request; unknown events get no handler and no answer).
// Event (server → client): producers_changed, payload [Announcement] = every current producer of the
//   room, sent to every peer of the room (the publisher included) after a publish, and after a peer
//   with producers leaves. Announcement = {producer_id, peer_id, kind}.
// HTTP: GET /healthz → 200 {"status":"up"}; GET /stats → 401 unless X-Stats-Key equals --stats-key
//   (an empty --stats-key never matches) → 200 {rooms, peers, transports, producers, consumers}.
// Disconnect closes the peer's transports (so its producers and consumers); an empty room closes its
// router. Prints "listening on <ip>:<port>" to stdout once ready; bad flags exit 2, startup errors 1.
//
// Usage: node sut/foreign/server.js --port P --jwt-secret S --allowed-origin O [--listen-ip IP]
//          [--announced-ip IP] [--rtc-min-port N] [--rtc-max-port N] [--stats-key K]
// MEDIASOUP_WORKER_BIN (read by mediasoup) selects the worker binary.

const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const { createHmac, timingSafeEqual } = require('crypto');
const { parseArgs } = require('util');
const { Sfu } = require('./sfu');

// Reuse the reference gateway's install instead of a second node_modules; NODE_PATH as the fallback.
const GATEWAY_MODULES = path.resolve(__dirname, '..', 'gateway', 'node_modules');
function load(name) {
  const local = path.join(GATEWAY_MODULES, name);
  return require(fs.existsSync(local) ? local : name);
}

const USAGE = 'usage: node sut/foreign/server.js --port P --jwt-secret S --allowed-origin O [--listen-ip IP] '
  + '[--announced-ip IP] [--rtc-min-port N] [--rtc-max-port N] [--stats-key K]';

function log(msg) {
  process.stderr.write(`[foreign-sfu] ${msg}\n`);
}

function fail(msg, code) {
  process.stderr.write(`foreign-sfu: ${msg}\n`);
  process.exit(code);
}

function parseFlags(argv) {
  const spec = {};
  for (const name of ['port', 'listen-ip', 'announced-ip', 'rtc-min-port', 'rtc-max-port', 'jwt-secret',
    'allowed-origin', 'stats-key']) spec[name] = { type: 'string' };
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new Error(err.message);
  }
  const port = (name, fallback) => {
    const raw = values[name] ?? fallback;
    if (raw === undefined) throw new Error(`--${name} is required`);
    const n = Number(raw);
    if (!/^\d+$/.test(String(raw)) || n < 1 || n > 65535) throw new Error(`--${name} must be a port 1-65535, got ${JSON.stringify(raw)}`);
    return n;
  };
  const required = (name) => {
    if (!values[name]) throw new Error(`--${name} is required (non-empty)`);
    return values[name];
  };
  const listenIp = values['listen-ip'] ?? '127.0.0.1';
  if (!net.isIP(listenIp)) throw new Error(`--listen-ip must be an IP address, got ${JSON.stringify(listenIp)}`);
  const announcedIp = values['announced-ip'] ?? listenIp;
  if (!net.isIP(announcedIp)) throw new Error(`--announced-ip must be an IP address, got ${JSON.stringify(announcedIp)}`);
  const flags = {
    port: port('port'),
    listenIp,
    announcedIp,
    rtcMinPort: port('rtc-min-port', '40000'),
    rtcMaxPort: port('rtc-max-port', '40999'),
    jwtSecret: required('jwt-secret'),
    allowedOrigin: required('allowed-origin'),
    statsKey: values['stats-key'] ?? '',
  };
  if (flags.rtcMinPort > flags.rtcMaxPort) throw new Error('--rtc-min-port must not exceed --rtc-max-port');
  return flags;
}

/** Verify an HS256 JWT; returns its claims or throws with the reason. */
function verifyJwt(token, secret) {
  if (typeof token !== 'string' || token === '') throw new Error('missing access_token');
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('malformed (expected header.payload.signature)');
  const decode = (part, what) => {
    try {
      const v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error();
      return v;
    } catch {
      throw new Error(`malformed ${what}`);
    }
  };
  const header = decode(parts[0], 'header');
  if (header.alg !== 'HS256') throw new Error(`unsupported alg ${JSON.stringify(header.alg)}`);
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], 'base64url');
  // Length first (timingSafeEqual needs equal lengths; the length of an HMAC is public anyway).
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new Error('bad signature');
  const claims = decode(parts[1], 'payload');
  const now = Date.now() / 1000;
  if (claims.exp !== undefined) {
    if (typeof claims.exp !== 'number') throw new Error('exp is not a number');
    if (now >= claims.exp) throw new Error('expired');
  }
  if (typeof claims.nbf === 'number' && now < claims.nbf) throw new Error('not yet valid (nbf)');
  for (const key of ['sub', 'room']) {
    if (typeof claims[key] !== 'string' || claims[key] === '') throw new Error(`missing ${key} claim`);
  }
  return claims;
}

function sameSecret(given, expected) {
  if (!expected || typeof given !== 'string') return false; // no --stats-key: /stats stays closed
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function httpHandler(flags, getSfu) {
  return (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const route = (req.url || '/').split('?')[0];
    if (route !== '/healthz' && route !== '/stats') return reply(404, { error: 'not found' });
    if (req.method !== 'GET') return reply(405, { error: 'method not allowed' });
    if (route === '/healthz') return reply(200, { status: 'up' });
    if (!sameSecret(req.headers['x-stats-key'], flags.statsKey)) return reply(401, { error: 'unauthorized' });
    return reply(200, getSfu().stats());
  };
}

async function main() {
  let flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    fail(`${err.message}\n${USAGE}`, 2);
  }
  const mediasoup = load('mediasoup');
  const { Server } = load('socket.io');

  let worker;
  try {
    worker = await mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: flags.rtcMinPort, rtcMaxPort: flags.rtcMaxPort });
  } catch (err) {
    fail(`cannot start the mediasoup worker (${process.env.MEDIASOUP_WORKER_BIN || 'MEDIASOUP_WORKER_BIN unset'}): ${err.message}`, 1);
  }
  // One worker and nothing to fail over to: without it every room is dead, so die loudly.
  worker.on('died', (err) => fail(`mediasoup worker died: ${err && err.message}`, 1));

  // The handler goes in at creation: Socket.IO wraps the listeners present when it attaches and hands
  // them only the requests outside /rtc/ (a listener added later would also see, and answer, /rtc/).
  let sfu = null;
  const server = http.createServer(httpHandler(flags, () => sfu));
  const io = new Server(server, {
    path: '/rtc',
    serveClient: false,
    cors: { origin: flags.allowedOrigin }, // browsers at the allowed origin may use polling too
  });
  const nsp = io.of('/sfu');
  sfu = new Sfu({ worker, nsp, listenIp: flags.listenIp, announcedIp: flags.announcedIp, log });

  nsp.use((socket, next) => {
    if (socket.handshake.headers.origin !== flags.allowedOrigin) return next(new Error('Origin not allowed'));
    let claims;
    try {
      claims = verifyJwt(socket.handshake.query.access_token, flags.jwtSecret);
    } catch (err) {
      return next(new Error(`invalid token: ${err.message}`));
    }
    socket.data.peerId = claims.sub;
    socket.data.roomId = claims.room;
    return next();
  });
  nsp.on('connection', (socket) => sfu.attach(socket));

  const shutdown = (signal) => {
    log(`${signal}: closing`);
    sfu.close();
    io.close();
    worker.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  server.on('error', (err) => fail(`cannot listen on ${flags.listenIp}:${flags.port}: ${err.message}`, 1));
  server.listen(flags.port, flags.listenIp, () => {
    process.stdout.write(`listening on ${flags.listenIp}:${flags.port}\n`);
  });
}

main().catch((err) => fail(`startup failed: ${err && err.stack}`, 1));
