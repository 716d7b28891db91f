'use strict';
// Ground-truth log: one JSON line per fact, `t` in seconds on CLOCK_MONOTONIC (see clock.js).
// The tester compares its own measurements against these lines, so the writer keeps event order
// (one append stream) and never throws into the pipeline.

const fs = require('fs');
const path = require('path');
const { logger } = require('./logger');

const log = logger('groundtruth');

class GroundTruth {
  /** @param {string|null} filePath null disables the log (every call becomes a no-op). */
  constructor(filePath) {
    this.stream = null;
    if (!filePath) return;
    fs.mkdirSync(path.dirname(filePath), { recursive: true });
    this.stream = fs.createWriteStream(filePath, { flags: 'a' });
    this.stream.on('error', (err) => {
      log.error(`ground truth ${filePath} unwritable, disabling it:`, err.message);
      this.stream = null;
    });
  }

  get enabled() {
    return this.stream !== null;
  }

  /** Append {kind, t, ...fields}; `tS` is the fact's time in monotonic seconds. */
  write(kind, tS, fields) {
    if (!this.stream) return;
    this.stream.write(`${JSON.stringify({ kind, t: tS, ...fields })}\n`);
  }

  /** Flush and close; resolves when the data is handed to the OS. */
  close() {
    const stream = this.stream;
    this.stream = null;
    if (!stream) return Promise.resolve();
    return new Promise((resolve) => stream.end(resolve));
  }
}

module.exports = { GroundTruth };
