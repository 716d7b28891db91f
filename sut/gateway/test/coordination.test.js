'use strict';
// Room coordination through Redis (`npm test` in sut/gateway). The cluster test runs a real
// redis-server (Debian's) on a free loopback port and is skipped when it is not installed (failed
// under SPEECHLOAD_REQUIRE_ALL=1, see prereq.js).

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('net');
const { spawn, spawnSync } = require('child_process');
const { Server } = require('socket.io');
const { Coordination } = require('../src/coordination');
const { buildConfig, ConfigError } = require('../src/config');
const { needs } = require('./prereq');

const haveRedis = spawnSync('redis-server', ['--version']).status === 0;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `predicate` every 20 ms until true or `ms` passed (an external process cannot notify us). */
async function until(predicate, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

test('config: redis is null or {host, port}', () => {
  assert.equal(buildConfig({}).config.redis, null);
  assert.deepEqual(buildConfig({ redis: { host: 'localhost', port: 6379 } }).config.redis, { host: 'localhost', port: 6379 });
  assert.throws(() => buildConfig({ redis: { host: '', port: 6379 } }), ConfigError);
  assert.throws(() => buildConfig({ redis: { host: 'x', port: 0 } }), /redis\.port/);
});

test('no Redis configured: single node, status says so', async () => {
  const c = new Coordination({ redis: null, io: new Server() });
  await c.start(() => ({ rooms: 0, peers: 0 }));
  assert.deepEqual({ ...c.status(), nodeId: undefined }, {
    configured: null, connected: false, mode: 'standalone', error: null, nodeId: undefined,
    nodes: 0, remoteRooms: 0, pubsubRoundTripMs: null,
  });
  await c.close();
});

test('a Redis host name that does not resolve: standalone, the error names it', async () => {
  const c = new Coordination({ redis: { host: 'redis-gateway.invalid', port: 6379 }, io: new Server() });
  await c.start(() => ({ rooms: 0, peers: 0 }));
  const s = c.status();
  assert.equal(s.mode, 'standalone');
  assert.equal(s.connected, false);
  assert.equal(s.configured, 'redis-gateway.invalid:6379');
  assert.match(s.error, /ENOTFOUND redis-gateway\.invalid/);
  c.announce('room-open', { room: 'r' }); // a no-op when standalone
  await c.close();
});

test('two replicas through a real Redis see each other and each other\'s rooms', needs(haveRedis, 'redis-server not installed'), async (t) => {
  const port = await freePort();
  const redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  t.after(() => redis.kill('SIGTERM'));
  const ready = await until(() => spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().includes('PONG'));
  assert.ok(ready, 'redis-server did not start');
  const a = new Coordination({ redis: { host: 'localhost', port }, io: new Server() });
  const b = new Coordination({ redis: { host: 'localhost', port }, io: new Server() });
  await a.start(() => ({ rooms: 0, peers: 0 }));
  await b.start(() => ({ rooms: 0, peers: 0 }));
  t.after(() => Promise.all([a.close(), b.close()]));
  assert.equal(a.status().mode, 'cluster');
  a.beat(); // b started after a's first heartbeat
  assert.ok(await until(() => a.status().nodes === 2 && b.status().nodes === 2), JSON.stringify(a.status()));
  a.announce('room-open', { room: 'r1' });
  assert.ok(await until(() => b.status().remoteRooms === 1), JSON.stringify(b.status()));
  assert.equal(typeof a.status().pubsubRoundTripMs, 'number');
});
