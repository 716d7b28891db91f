'use strict';
// A tiny Prometheus text-format registry (counters, gauges, histograms with labels), so the
// gateway needs no metrics dependency. Exposition format 0.0.4.

const { monitorEventLoopDelay } = require('node:perf_hooks');

function labelKey(labels) {
  const keys = Object.keys(labels);
  if (keys.length === 0) return ''; // the common case, per packet: skip the work below
  keys.sort();
  return keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
}

function fmt(v) {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class Counter {
  /** @param {boolean} [labelled] a labelled counter has no series until first inc(); a plain one starts at 0 */
  constructor(name, help, labelled = false) {
    Object.assign(this, { name, help, type: 'counter', values: new Map(), labelled });
  }

  inc(labels = {}, by = 1) {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) || 0) + by);
  }

  lines() {
    if (this.values.size === 0) return this.labelled ? [] : [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`);
  }
}

class Gauge {
  /** @param {() => number | Array<[object, number]>} [collect] pull value(s) at scrape time */
  constructor(name, help, collect) {
    Object.assign(this, { name, help, type: 'gauge', values: new Map(), collect });
  }

  set(labels, v) {
    this.values.set(labelKey(labels), v);
  }

  lines() {
    if (this.collect) {
      const got = this.collect();
      if (typeof got === 'number') return [`${this.name} ${fmt(got)}`];
      return got.map(([labels, v]) => `${this.name}{${labelKey(labels)}} ${fmt(v)}`);
    }
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${fmt(v)}`);
  }
}

/**
 * How late this process's event loop ran timers, as quantile gauges over the last complete window
 * (10 s). A fixed window rather than "since the last scrape": Prometheus, a preflight and a bench
 * reading the same endpoint all see the same figures. Until the first window closes, the figures
 * since start. A busy loop delays every packet the gateway relays and every event it sends.
 */
class LoopDelay {
  constructor(name, help, { windowMs = 10000, resolutionMs = 10 } = {}) {
    Object.assign(this, { name, help, type: 'gauge', resolutionNs: resolutionMs * 1e6 });
    this.monitor = monitorEventLoopDelay({ resolution: resolutionMs });
    this.monitor.enable();
    this.closed = null; // the last complete window's quantiles (seconds)
    this.timer = setInterval(() => this.roll(), windowMs);
    this.timer.unref();
  }

  /** Close the current window: keep its quantiles, start the next. */
  roll() {
    this.closed = this.quantiles();
    this.monitor.reset();
  }

  quantiles() {
    const m = this.monitor;
    if (m.count === 0) return null;
    // The histogram holds the time between the monitor's ticks (ns), its resolution included: a loop
    // that is never late reads 10 ms. The delay is what is over the resolution.
    return [['0.5', m.percentile(50)], ['0.9', m.percentile(90)], ['0.99', m.percentile(99)], ['1', m.max]]
      .map(([q, ns]) => [q, Math.max(0, ns - this.resolutionNs) / 1e9]);
  }

  lines() {
    const got = this.closed || this.quantiles();
    return got ? got.map(([q, v]) => `${this.name}{quantile="${q}"} ${fmt(v)}`) : [];
  }

  stop() {
    clearInterval(this.timer);
    this.monitor.disable();
  }
}

class Histogram {
  constructor(name, help, buckets) {
    Object.assign(this, { name, help, type: 'histogram', buckets: [...buckets].sort((a, b) => a - b), series: new Map() });
  }

  observe(labels, v) {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) s.counts[i] += 1;
    s.sum += v;
    s.count += 1;
  }

  lines() {
    const out = [];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{${sep}le="${fmt(b)}"} ${s.counts[i]}`));
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${s.sum}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`);
    }
    return out;
  }
}

class Registry {
  constructor() {
    this.metrics = [];
  }

  add(metric) {
    this.metrics.push(metric);
    return metric;
  }

  render() {
    const out = [];
    for (const m of this.metrics) {
      out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`, ...m.lines());
    }
    return `${out.join('\n')}\n`;
  }
}

const LATENCY_BUCKETS_S = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30];
const SMALL_BUCKETS_MS = [0.5, 1, 2, 5, 10, 20, 50, 100];

/** The gateway's metrics, in one place so names stay consistent. */
function createMetrics() {
  const r = new Registry();
  return {
    registry: r,
    utterances: r.add(new Counter('gateway_utterances_total', 'Utterances segmented by the VAD')),
    stageResults: r.add(new Counter('gateway_stage_results_total', 'Pipeline stage outcomes by stage and result', true)),
    stageLatency: r.add(new Histogram('gateway_stage_latency_seconds',
      'Gateway-side stage latency: stt=transcription-speech_end, translation, tts=first packet-translation, e2e=first packet-speech_end',
      LATENCY_BUCKETS_S)),
    backendLatency: r.add(new Histogram('gateway_backend_request_seconds', 'HTTP request duration per backend service', LATENCY_BUCKETS_S)),
    transportConnect: r.add(new Histogram('gateway_webrtc_transport_connect_seconds',
      'WebRtcTransport creation to DTLS connected', LATENCY_BUCKETS_S)),
    tapPackets: r.add(new Counter('gateway_tap_packets_total', 'RTP packets received by the pipeline taps')),
    tapLost: r.add(new Counter('gateway_tap_lost_packets_total', 'RTP packets missing at the taps (sequence gaps)')),
    tapDecoded: r.add(new Counter('gateway_tap_decoded_packets_total',
      'Tap packets Opus-decoded: every packet with the energy VAD; with the audio-level VAD only the packets of utterances, when they end')),
    ttsPackets: r.add(new Counter('gateway_tts_packets_total', 'RTP packets injected into TTS producers')),
    ttsLateness: r.add(new Histogram('gateway_tts_send_lateness_ms', 'TTS packet send time minus its scheduled time (ms)', SMALL_BUCKETS_MS)),
    socketRequests: r.add(new Counter('gateway_signaling_requests_total', 'Signaling requests by event and result', true)),
    pipedProducers: r.add(new Counter('gateway_piped_producers_total',
      'Producers piped between gateway replicas: in = produced here from another replica, out = consumed here for another', true)),
    replicaRpc: r.add(new Counter('gateway_replica_rpc_total', 'Requests to other gateway replicas by method and result', true)),
    replicaRpcLatency: r.add(new Histogram('gateway_replica_rpc_seconds', 'Request to another gateway replica until its answer',
      LATENCY_BUCKETS_S)),
    loopDelay: r.add(new LoopDelay('gateway_event_loop_delay_seconds',
      'How late the event loop ran timers, quantiles over the last complete 10 s window')),
  };
}

module.exports = { createMetrics, Registry, Counter, Gauge, Histogram, LoopDelay };
