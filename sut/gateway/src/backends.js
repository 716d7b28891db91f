'use strict';
// HTTP calls to the STT / translation / TTS services. Every call is bounded by requestTimeoutMs
// (connect, headers and body alike) and can be aborted by the owner (a closing pipeline).
// Errors carry a short, specific message; the pipeline prefixes the stage.
//
// node:http with a keep-alive agent, not fetch(): these calls carry every utterance's audio, and
// fetch (undici) costs several times the CPU per request (web streams, and a copy of each body).

const http = require('http');
const https = require('https');
const { nowMs } = require('./clock');
const { BITRATE: TTS_BITRATE } = require('./ttsaudio');

// Idle connections are closed after 30 s: well before aiohttp's 75 s, so a request never goes out on a
// connection the service is closing.
const KEEP_ALIVE = { keepAlive: true, timeout: 30000 };
const AGENTS = { 'http:': new http.Agent(KEEP_ALIVE), 'https:': new https.Agent(KEEP_ALIVE) };

class BackendError extends Error {}

/** What went wrong, in a few words: the abort's reason when we aborted, else the socket's error. */
function describeError(err, timeout, owner, timeoutMs) {
  if (timeout.aborted) return `timed out after ${timeoutMs} ms`;
  if (owner && owner.aborted) return 'aborted: producer closed';
  if (err.message) return err.code && !err.message.includes(err.code) ? `${err.code} ${err.message}` : err.message;
  return err.code || String(err);
}

/** One request: {status, headers, body}; rejects on any error, including an abort by `signal`. */
function send(url, { method, headers, body }, signal) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const payload = body || Buffer.alloc(0);
    const req = (target.protocol === 'https:' ? https : http).request(target, {
      method, agent: AGENTS[target.protocol], signal, headers: { ...headers, 'content-length': payload.length },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject); // the connection dropped (or we aborted) mid-body
    });
    req.on('error', reject);
    req.end(payload);
  });
}

class Backends {
  /** @param {object} o services {stt, translation, tts} base URLs, timeoutMs, metrics */
  constructor({ services, timeoutMs, metrics }) {
    this.services = services;
    this.timeoutMs = timeoutMs;
    this.metrics = metrics;
  }

  async _request(service, path, init, signal) {
    const url = `${this.services[service]}${path}`;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const t0 = nowMs();
    let res;
    try {
      res = await send(url, init, signal ? AbortSignal.any([timeout, signal]) : timeout);
    } catch (err) {
      throw new BackendError(`POST ${url}: ${describeError(err, timeout, signal, this.timeoutMs)}`);
    } finally {
      this.metrics.backendLatency.observe({ service }, (nowMs() - t0) / 1000);
    }
    if (res.status < 200 || res.status > 299) {
      const text = res.body.toString('utf8', 0, Math.min(res.body.length, 300)).replace(/\s+/g, ' ');
      throw new BackendError(`POST ${url}: HTTP ${res.status}${text ? `: ${text}` : ''}`);
    }
    return res;
  }

  async _json(service, path, init, signal) {
    const { body } = await this._request(service, path, init, signal);
    try {
      return JSON.parse(body.toString('utf8'));
    } catch {
      throw new BackendError(`${service}: response is not JSON: ${body.toString('utf8', 0, 100)}`);
    }
  }

  /** WAV bytes → transcript text ('' when the service heard nothing it recognises). */
  async transcribe(wav, language, signal) {
    const data = await this._json('stt', `/transcribe?language=${encodeURIComponent(language)}`,
      { method: 'POST', headers: { 'content-type': 'audio/wav' }, body: wav }, signal);
    if (typeof data.text !== 'string') throw new BackendError(`stt: response has no "text" string: ${JSON.stringify(data).slice(0, 200)}`);
    return data.text;
  }

  async translate(text, source, target, signal) {
    const data = await this._json('translation', '/translate',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ text, source, target })) }, signal);
    if (typeof data.text !== 'string') throw new BackendError(`translation: response has no "text" string: ${JSON.stringify(data).slice(0, 200)}`);
    return data.text;
  }

  /**
   * → {body, contentType, durationMs}: Ogg Opus asked for (48 kHz mono, 20 ms packets at `bitrate`,
   * what the injector sends as is); a service may answer WAV instead (ttsaudio.js takes both).
   */
  async synthesize(text, language, signal) {
    const request = { text, language, sample_rate: 48000, format: 'ogg_opus', bitrate: TTS_BITRATE };
    const { headers, body } = await this._request('tts', '/synthesize',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(request)) }, signal);
    const duration = Number.parseFloat(headers['x-audio-duration-ms']);
    return { body, contentType: headers['content-type'], durationMs: Number.isFinite(duration) ? duration : null };
  }

  /** GET /health of one service, bounded by `timeoutMs`: 'ok' or 'down'. */
  async health(service, timeoutMs = 1000) {
    try {
      const res = await send(`${this.services[service]}/health`, { method: 'GET', headers: {} }, AbortSignal.timeout(timeoutMs));
      return res.status === 200 ? 'ok' : 'down';
    } catch {
      return 'down';
    }
  }
}

module.exports = { Backends, BackendError };
