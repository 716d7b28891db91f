'use strict';
// HTTP calls to the STT / translation / TTS services. Every call is bounded by requestTimeoutMs
// (connect, headers and body alike) and can be aborted by the owner (a closing pipeline).
// Errors carry a short, specific message; the pipeline prefixes the stage.

const { nowMs } = require('./clock');

class BackendError extends Error {}

function describeFetchError(err, timeoutMs) {
  if (err.name === 'TimeoutError') return `timed out after ${timeoutMs} ms`;
  if (err.name === 'AbortError') return 'aborted: producer closed';
  const cause = err.cause;
  if (cause && cause.message) return cause.code && !cause.message.includes(cause.code) ? `${cause.code} ${cause.message}` : cause.message;
  if (cause && cause.code) return cause.code;
  return err.message;
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
    const signals = [AbortSignal.timeout(this.timeoutMs)];
    if (signal) signals.push(signal);
    const t0 = nowMs();
    let res;
    let body;
    try {
      res = await fetch(url, { ...init, signal: AbortSignal.any(signals) });
      body = Buffer.from(await res.arrayBuffer());
    } catch (err) {
      throw new BackendError(`POST ${url}: ${describeFetchError(err, this.timeoutMs)}`);
    } finally {
      this.metrics.backendLatency.observe({ service }, (nowMs() - t0) / 1000);
    }
    if (!res.ok) {
      const text = body.toString('utf8', 0, Math.min(body.length, 300)).replace(/\s+/g, ' ');
      throw new BackendError(`POST ${url}: HTTP ${res.status}${text ? `: ${text}` : ''}`);
    }
    return { res, body };
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
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text, source, target }) }, signal);
    if (typeof data.text !== 'string') throw new BackendError(`translation: response has no "text" string: ${JSON.stringify(data).slice(0, 200)}`);
    return data.text;
  }

  /** → WAV bytes (mono 16-bit, 48 kHz requested). */
  async synthesize(text, language, signal) {
    const { body } = await this._request('tts', '/synthesize',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text, language, sample_rate: 48000 }) }, signal);
    return body;
  }

  /** GET /health of one service, bounded by `timeoutMs`: 'ok' or 'down'. */
  async health(service, timeoutMs = 1000) {
    try {
      const res = await fetch(`${this.services[service]}/health`, { signal: AbortSignal.timeout(timeoutMs) });
      await res.arrayBuffer();
      return res.ok ? 'ok' : 'down';
    } catch {
      return 'down';
    }
  }
}

module.exports = { Backends, BackendError };
