'use strict';
// The mediasoup worker pool. MEDIASOUP_WORKER_BIN (read by mediasoup itself) selects the locally
// built worker binary. A dead worker is reported (health, logs) and its rooms are closed; new
// rooms go to live workers.

const mediasoup = require('mediasoup');
const { logger } = require('./logger');

const log = logger('workers');

class WorkerPool {
  constructor() {
    this.entries = []; // {worker, alive, rooms}
    this.onDied = () => {};
  }

  /** Start `count` workers; rejects (naming the cause) if any fails to start. */
  async start({ count, rtcMinPort, rtcMaxPort, logLevel }) {
    for (let i = 0; i < count; i++) {
      let worker;
      try {
        worker = await mediasoup.createWorker({ logLevel, rtcMinPort, rtcMaxPort });
      } catch (err) {
        const bin = process.env.MEDIASOUP_WORKER_BIN || '(MEDIASOUP_WORKER_BIN unset: npm package default)';
        throw new Error(`cannot start mediasoup worker ${bin}: ${err.message}`);
      }
      const entry = { worker, alive: true, rooms: 0 };
      worker.on('died', (err) => {
        entry.alive = false;
        log.error(`mediasoup worker pid ${worker.pid} died:`, err && err.message);
        this.onDied(worker);
      });
      this.entries.push(entry);
      log.info(`mediasoup worker pid ${worker.pid} started (rtc ports ${rtcMinPort}-${rtcMaxPort})`);
    }
  }

  /** The live worker with the fewest rooms; throws when none is alive. */
  acquire() {
    const live = this.entries.filter((e) => e.alive);
    if (live.length === 0) throw new Error('no live mediasoup worker');
    const entry = live.reduce((a, b) => (b.rooms < a.rooms ? b : a));
    entry.rooms += 1;
    return entry.worker;
  }

  release(worker) {
    const entry = this.entries.find((e) => e.worker === worker);
    if (entry && entry.rooms > 0) entry.rooms -= 1;
  }

  status() {
    return this.entries.map((e) => ({ pid: e.worker.pid, alive: e.alive && !e.worker.closed }));
  }

  get allAlive() {
    return this.entries.length > 0 && this.entries.every((e) => e.alive && !e.worker.closed);
  }

  close() {
    for (const e of this.entries) if (!e.worker.closed) e.worker.close();
  }
}

module.exports = { WorkerPool };
