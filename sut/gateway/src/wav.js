'use strict';
// WAV (RIFF PCM 16-bit) encode for STT requests and decode for TTS responses.

const HEADER_BYTES = 44;
// Samples made by allocWavPcm() → the WAV buffer they live in (weak: gone with the samples).
const IN_WAV = new WeakMap();

function writeHeader(buf, dataBytes, sampleRate) {
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + dataBytes, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(dataBytes, 40);
}

/** Mono s16le PCM samples (Int16Array) → a complete WAV file buffer (no copy for allocWavPcm's). */
function encodeWav(samples, sampleRate) {
  const made = IN_WAV.get(samples);
  if (made && made.sampleRate === sampleRate) return made.buf;
  const dataBytes = samples.length * 2;
  const buf = Buffer.alloc(HEADER_BYTES + dataBytes);
  writeHeader(buf, dataBytes, sampleRate);
  Buffer.from(samples.buffer, samples.byteOffset, dataBytes).copy(buf, HEADER_BYTES);
  return buf;
}

/**
 * n zeroed mono samples that already sit inside a complete WAV buffer: fill them, and encodeWav()
 * hands that buffer out as it is. An utterance's audio is a few hundred KB; not copying it once more
 * spares the garbage collector as much as the copy.
 */
function allocWavPcm(n, sampleRate) {
  const buf = Buffer.alloc(HEADER_BYTES + 2 * n); // its own ArrayBuffer at offset 0: samples 2-aligned
  writeHeader(buf, 2 * n, sampleRate);
  const samples = new Int16Array(buf.buffer, buf.byteOffset + HEADER_BYTES, n);
  IN_WAV.set(samples, { buf, sampleRate });
  return samples;
}

/**
 * WAV buffer → {sampleRate, samples: Int16Array mono}. Accepts 16-bit PCM with any channel count
 * (downmixed by averaging); walks the chunk list so LIST/fact chunks before `data` are fine.
 */
function decodeWav(buf) {
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('not a RIFF/WAVE file');
  }
  let fmt = null;
  let offset = 12;
  while (offset + 8 <= buf.length) {
    const id = buf.toString('ascii', offset, offset + 4);
    let size = buf.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ') {
      fmt = {
        format: buf.readUInt16LE(body),
        channels: buf.readUInt16LE(body + 2),
        sampleRate: buf.readUInt32LE(body + 4),
        bits: buf.readUInt16LE(body + 14),
      };
    } else if (id === 'data') {
      if (!fmt) throw new Error("WAV 'data' chunk before 'fmt '");
      // Streaming writers put 0 or 0xFFFFFFFF in the size: take what is there.
      if (size === 0 || body + size > buf.length) size = buf.length - body;
      return toMono(buf.subarray(body, body + size), fmt);
    }
    offset = body + size + (size & 1); // chunks are word aligned
  }
  throw new Error("WAV has no 'data' chunk");
}

function toMono(data, fmt) {
  // 0xFFFE is WAVE_FORMAT_EXTENSIBLE; with 16 bits it is PCM in practice.
  if ((fmt.format !== 1 && fmt.format !== 0xfffe) || fmt.bits !== 16) {
    throw new Error(`unsupported WAV format ${fmt.format} with ${fmt.bits} bits (need 16-bit PCM)`);
  }
  if (fmt.channels < 1) throw new Error('WAV has 0 channels');
  const frames = Math.floor(data.length / (2 * fmt.channels));
  if (fmt.channels === 1) {
    // The common case (what we ask TTS for): one copy, no per-sample work (WAV and every host we
    // run on are little-endian). Copying also fixes alignment, which an Int16Array view over the
    // response buffer might lack.
    const samples = new Int16Array(frames);
    Buffer.from(samples.buffer).set(data.subarray(0, frames * 2));
    return { sampleRate: fmt.sampleRate, samples };
  }
  const samples = new Int16Array(frames);
  for (let i = 0; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < fmt.channels; c++) sum += data.readInt16LE(2 * (i * fmt.channels + c));
    samples[i] = Math.round(sum / fmt.channels);
  }
  return { sampleRate: fmt.sampleRate, samples };
}

/** Linear-interpolation resampler: only a fallback for a TTS that ignored sample_rate. */
function resampleLinear(samples, fromRate, toRate) {
  if (fromRate === toRate) return samples;
  const outLen = Math.floor((samples.length * toRate) / fromRate);
  const out = new Int16Array(outLen);
  const step = fromRate / toRate;
  for (let i = 0; i < outLen; i++) {
    const x = i * step;
    const i0 = Math.floor(x);
    const i1 = Math.min(i0 + 1, samples.length - 1);
    const frac = x - i0;
    out[i] = Math.round(samples[i0] * (1 - frac) + samples[i1] * frac);
  }
  return out;
}

module.exports = { encodeWav, allocWavPcm, decodeWav, resampleLinear };
