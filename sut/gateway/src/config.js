'use strict';
// gateway.json: written by sut/stack.py from the stack TOML (docs/reference-stack.md).
// Validated up front so a bad value fails at start with a message naming the key.

const fs = require('fs');

const DEFAULTS = {
  host: '127.0.0.1',
  port: 3000,
  rtcMinPort: 40000,
  rtcMaxPort: 40999,
  announcedIp: null, // null: announce `host`
  numWorkers: 1,
  vad: {
    source: 'energy', thresholdDbfs: -50, levelThresholdDbov: -45,
    hangoverMs: 400, maxUtteranceMs: 15000, prerollMs: 200,
  },
  sourceLanguage: 'en',
  targetLanguage: 'es',
  services: { stt: 'http://127.0.0.1:8002', translation: 'http://127.0.0.1:8005', tts: 'http://127.0.0.1:8003' },
  requestTimeoutMs: 10000,
  ttsGapMs: 100, // minimum silence between two injected utterances on one TTS producer
  reportErrors: true, // false: a failed utterance just ends, no pipelineError (as many gateways do)
  groundTruthPath: null,
  logLevel: 'info',
  redis: null, // {host, port}: coordinate rooms across gateway replicas through Redis; null: one node
  sessionIdPrefix: '', // put before Engine.IO session ids, so a proxy can route a session to its replica
  tapLoss: 0, // fault: fraction of mic RTP packets the tap drops (stack config [faults] tap_loss)
};

class ConfigError extends Error {}

function checkNumber(obj, key, where, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new ConfigError(`'${where}${key}' must be ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(v)}`);
  }
  if (v < min || v > max) throw new ConfigError(`'${where}${key}' must be in [${min}, ${max}], got ${v}`);
}

function checkString(obj, key, where, { nullable = false } = {}) {
  const v = obj[key];
  if (nullable && v === null) return;
  if (typeof v !== 'string' || v.length === 0) {
    throw new ConfigError(`'${where}${key}' must be a non-empty string${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
  }
}

/** Merge `raw` over the defaults (one level deep for the nested tables) and validate. */
function buildConfig(raw) {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('config must be a JSON object');
  const unknown = Object.keys(raw).filter((k) => !(k in DEFAULTS));
  const cfg = { ...DEFAULTS, ...raw };
  cfg.vad = { ...DEFAULTS.vad, ...(raw.vad || {}) };
  cfg.services = { ...DEFAULTS.services, ...(raw.services || {}) };

  checkString(cfg, 'host', '');
  checkNumber(cfg, 'port', '', { min: 0, max: 65535, integer: true });
  checkNumber(cfg, 'rtcMinPort', '', { min: 1024, max: 65535, integer: true });
  checkNumber(cfg, 'rtcMaxPort', '', { min: cfg.rtcMinPort, max: 65535, integer: true });
  checkString(cfg, 'announcedIp', '', { nullable: true });
  checkNumber(cfg, 'numWorkers', '', { min: 1, max: 64, integer: true });
  checkNumber(cfg.vad, 'thresholdDbfs', 'vad.', { min: -120, max: 0 });
  checkNumber(cfg.vad, 'levelThresholdDbov', 'vad.', { min: -127, max: 0 });
  if (!['energy', 'audio-level'].includes(cfg.vad.source)) {
    throw new ConfigError(`'vad.source' must be "energy" or "audio-level", got ${JSON.stringify(cfg.vad.source)}`);
  }
  checkNumber(cfg.vad, 'hangoverMs', 'vad.', { min: 20, max: 10000 });
  checkNumber(cfg.vad, 'maxUtteranceMs', 'vad.', { min: 100, max: 600000 });
  checkNumber(cfg.vad, 'prerollMs', 'vad.', { min: 0, max: 2000 });
  checkString(cfg, 'sourceLanguage', '');
  checkString(cfg, 'targetLanguage', '');
  for (const name of ['stt', 'translation', 'tts']) {
    checkString(cfg.services, name, 'services.');
    try {
      new URL(cfg.services[name]); // eslint-disable-line no-new
    } catch {
      throw new ConfigError(`'services.${name}' must be a URL, got ${JSON.stringify(cfg.services[name])}`);
    }
    cfg.services[name] = cfg.services[name].replace(/\/+$/, '');
  }
  checkNumber(cfg, 'requestTimeoutMs', '', { min: 1, max: 600000 });
  checkNumber(cfg, 'ttsGapMs', '', { min: 0, max: 10000 });
  checkNumber(cfg, 'tapLoss', '', { min: 0, max: 0.99 });
  if (typeof cfg.reportErrors !== 'boolean') {
    throw new ConfigError(`'reportErrors' must be true or false, got ${JSON.stringify(cfg.reportErrors)}`);
  }
  checkString(cfg, 'groundTruthPath', '', { nullable: true });
  checkString(cfg, 'logLevel', '');
  if (cfg.redis !== null) {
    if (typeof cfg.redis !== 'object' || Array.isArray(cfg.redis)) {
      throw new ConfigError(`'redis' must be {host, port} or null, got ${JSON.stringify(cfg.redis)}`);
    }
    checkString(cfg.redis, 'host', 'redis.');
    checkNumber(cfg.redis, 'port', 'redis.', { min: 1, max: 65535, integer: true });
  }
  if (typeof cfg.sessionIdPrefix !== 'string' || !/^[A-Za-z0-9.]*$/.test(cfg.sessionIdPrefix)) {
    throw new ConfigError(`'sessionIdPrefix' must be letters, digits and dots, got ${JSON.stringify(cfg.sessionIdPrefix)}`);
  }
  if (cfg.announcedIp === null) cfg.announcedIp = cfg.host;
  return { config: cfg, unknownKeys: unknown };
}

function loadConfig(path) {
  let text;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${err.message}`);
  }
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON: ${err.message}`);
  }
  try {
    return buildConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`${path}: ${err.message}`);
    throw err;
  }
}

module.exports = { loadConfig, buildConfig, ConfigError, DEFAULTS };
