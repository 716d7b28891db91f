'use strict';
// Opus encode/decode over the libopus WebAssembly build that ships in opusscript 0.1.1, without
// opusscript's JS wrapper. That wrapper addresses its buffers through HEAPU16 at twice their real
// address and keeps typed-array views that go stale when the wasm heap grows, so on one gateway its
// instances broke after ~78 of them ("memory access out of bounds", "Bad argument"): the old cap
// of ~37 callers. Here every call addresses buffers by their byte address and re-reads the heap
// views (the heap grows on demand), and all instances share one set of scratch buffers (calls are
// synchronous), so an instance costs only libopus's state (~85 KB) and there is no fixed limit.
//
// The handler's convention (opusscript's C++ side): PCM crosses the boundary one byte per 16-bit
// element, little-endian (encode input and decode output alike); packets are plain bytes.

const SAMPLE_RATE = 48000;
const MAX_FRAME_SAMPLES = 5760; // 120 ms at 48 kHz: the longest Opus packet
const MAX_PACKET_BYTES = 1276 * 3;
const APPLICATION_VOIP = 2048;
const CTL_SET_BITRATE = 4002;
const CTL_SET_COMPLEXITY = 4010;
const ERRORS = {
  '-1': 'bad argument', '-2': 'buffer too small', '-3': 'internal error', '-4': 'invalid packet',
  '-5': 'unimplemented', '-6': 'invalid state', '-7': 'memory allocation failed',
};

let native = null; // the wasm module, instantiated on first use
let scratch = null; // {pcm, packet}: byte addresses of the shared buffers

function lib() {
  if (native === null) {
    native = require('opusscript/build/opusscript_native_wasm.js')();
    const maxChannels = 2;
    scratch = {
      // decode output and encode input: 2 elements of 2 bytes per sample (see the convention above)
      pcm: native._malloc(MAX_FRAME_SAMPLES * maxChannels * 4),
      packet: native._malloc(MAX_PACKET_BYTES),
    };
  }
  return native;
}

function check(code, what) {
  if (code < 0) throw new Error(`opus ${what}: ${ERRORS[code] || `error ${code}`}`);
  return code;
}

function newHandler(sampleRate, channels, application) {
  try {
    return new (lib().OpusScriptHandler)(sampleRate, channels, application);
  } catch (err) {
    // embind rethrows the C++ `throw <opus error code>` as a bare number
    throw new Error(`opus create: ${typeof err === 'number' ? ERRORS[err] || `error ${err}` : err.message}`);
  }
}

class OpusDecoder {
  constructor(sampleRate = SAMPLE_RATE, channels = 1) {
    this.channels = channels;
    this.handler = newHandler(sampleRate, channels, APPLICATION_VOIP);
  }

  /** Decode one packet into `out` at `offset` (interleaved samples); returns samples per channel. */
  decodeInto(payload, out, offset = 0) {
    if (payload.length > MAX_PACKET_BYTES) throw new Error(`opus decode: packet of ${payload.length} bytes`);
    const m = lib();
    m.HEAPU8.set(payload, scratch.packet);
    const n = check(this.handler._decode(scratch.packet, payload.length, scratch.pcm), 'decode');
    const count = Math.min(n * this.channels, out.length - offset);
    const heap = m.HEAPU16; // read after the call: the heap may have grown (new buffer) inside it
    const base = scratch.pcm >> 1;
    for (let i = 0; i < count; i++) out[offset + i] = heap[base + 2 * i] | (heap[base + 2 * i + 1] << 8);
    return n;
  }

  /** Decode one packet: a new Int16Array of its interleaved samples. */
  decode(payload) {
    const out = new Int16Array(MAX_FRAME_SAMPLES * this.channels);
    const n = this.decodeInto(payload, out, 0);
    return out.slice(0, n * this.channels);
  }

  free() {
    if (this.handler) {
      this.handler.delete();
      this.handler = null;
    }
  }
}

class OpusEncoder {
  /** @param {object} o sampleRate, channels, bitrate (bit/s), complexity (0–10) */
  constructor({ sampleRate = SAMPLE_RATE, channels = 1, bitrate = 32000, complexity = 5 } = {}) {
    this.channels = channels;
    this.handler = newHandler(sampleRate, channels, APPLICATION_VOIP);
    check(this.handler._encoder_ctl(CTL_SET_BITRATE, bitrate), 'set bitrate');
    check(this.handler._encoder_ctl(CTL_SET_COMPLEXITY, complexity), 'set complexity');
  }

  /** Encode one frame (Int16Array, frameSamples × channels, interleaved): the packet as a Buffer. */
  encode(pcm, frameSamples) {
    if (pcm.length !== frameSamples * this.channels || frameSamples > MAX_FRAME_SAMPLES) {
      throw new Error(`opus encode: ${pcm.length} samples for a frame of ${frameSamples} × ${this.channels}`);
    }
    const m = lib();
    const heap = m.HEAPU16;
    const base = scratch.pcm >> 1;
    for (let i = 0; i < pcm.length; i++) {
      heap[base + 2 * i] = pcm[i] & 0xff;
      heap[base + 2 * i + 1] = (pcm[i] >> 8) & 0xff;
    }
    const n = check(this.handler._encode(scratch.pcm, pcm.length * 2, scratch.packet, frameSamples), 'encode');
    return Buffer.from(m.HEAPU8.subarray(scratch.packet, scratch.packet + n)); // a copy: the scratch is reused
  }

  free() {
    if (this.handler) {
      this.handler.delete();
      this.handler = null;
    }
  }
}

// Frame durations of the TOC's 32 configurations, in 48 kHz samples (RFC 6716 §3.1, Table 2).
const SILK_FRAMES = [480, 960, 1920, 2880];
const CELT_FRAMES = [120, 240, 480, 960];

/**
 * Duration of one Opus packet in 48 kHz samples, from its TOC byte (and frame count byte for
 * code 3), without decoding it; 0 for an empty or malformed packet.
 */
function packetSamples(payload) {
  if (!payload || payload.length < 1) return 0;
  const toc = payload[0];
  const config = toc >> 3;
  let frame;
  if (config < 12) frame = SILK_FRAMES[config & 3];
  else if (config < 16) frame = config & 1 ? 960 : 480; // hybrid: 10 or 20 ms
  else frame = CELT_FRAMES[config & 3];
  const code = toc & 3;
  let frames = 1;
  if (code === 1 || code === 2) frames = 2;
  else if (code === 3) {
    if (payload.length < 2) return 0;
    frames = payload[1] & 0x3f;
  }
  const total = frame * frames;
  return total > 0 && total <= MAX_FRAME_SAMPLES ? total : 0;
}

/**
 * Pay the codec's one-time costs before the first caller does: the wasm instantiation and V8's lazy
 * compilation of each wasm function on its first call (10–50 ms each for encode and decode).
 */
function warmUp() {
  const enc = new OpusEncoder();
  const dec = new OpusDecoder();
  try {
    dec.decode(enc.encode(new Int16Array(960), 960));
  } finally {
    enc.free();
    dec.free();
  }
}

/** Size of the codec's wasm heap in bytes (it grows on demand, never shrinks): for tests and logs. */
function heapBytes() {
  return lib().HEAPU8.length;
}

module.exports = { OpusDecoder, OpusEncoder, packetSamples, warmUp, heapBytes, SAMPLE_RATE, MAX_FRAME_SAMPLES };
