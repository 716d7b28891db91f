'use strict';
// Minimal levelled logger. Lines go to stderr (the stack captures it into the state dir's log).

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, none: 100 };
let threshold = LEVELS.info;

function setLevel(level) {
  if (!(level in LEVELS)) {
    throw new Error(`logLevel must be one of ${Object.keys(LEVELS).join(', ')}, got ${JSON.stringify(level)}`);
  }
  threshold = LEVELS[level];
}

function format(arg) {
  if (arg instanceof Error) return arg.stack || String(arg);
  if (typeof arg === 'object' && arg !== null) {
    try { return JSON.stringify(arg); } catch { return String(arg); }
  }
  return String(arg);
}

function write(level, scope, args) {
  if (LEVELS[level] < threshold) return;
  const line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} [${scope}] ${args.map(format).join(' ')}\n`;
  process.stderr.write(line);
}

/** A logger bound to a scope name, e.g. logger('tap'). */
function logger(scope) {
  return {
    debug: (...a) => write('debug', scope, a),
    info: (...a) => write('info', scope, a),
    warn: (...a) => write('warn', scope, a),
    error: (...a) => write('error', scope, a),
    enabled: (level) => LEVELS[level] >= threshold,
  };
}

module.exports = { logger, setLevel, LEVELS };
