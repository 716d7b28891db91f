'use strict';
// An utterance's audio from the Opus payloads the tap kept for it (audio-level VAD: the preroll
// window and the utterance, see vad.js). Decoded only here, once the utterance has ended, with a
// decoder of its own that is freed when done: a caller costs no codec state between utterances, and
// the silence between utterances is never decoded.
//
// Decoded at the rate STT works at (16 kHz: both engines resample to it first; the Opus decoder
// produces it directly, for about 2/3 of the work of 48 kHz and a third of the WAV), straight into
// the buffer of the STT request's WAV (wav.js allocWavPcm).
//
// The decode runs in slices with a turn of the event loop between them: a 15 s utterance is ~750
// packets (~20 ms of decoding), and TTS pacing of every caller shares this loop.

const { setImmediate: nextTurn } = require('timers/promises');
const { OpusDecoder, SAMPLE_RATE } = require('./opus');
const { allocWavPcm } = require('./wav');

const STT_RATE = 16000;
const SLICE_PACKETS = 25; // ~1 ms of decoding per turn

/**
 * Decode chunks [from, to) into `out` (positions given by `offsets`, in output samples). A null
 * payload is a lost packet: silence, as `out` is zero-filled. A packet that fails to decode is
 * silence too, reported through onError. Returns the number of packets decoded.
 */
function decodeRange(decoder, chunks, offsets, out, from, to, onError) {
  let decoded = 0;
  for (let i = from; i < to; i++) {
    const { media } = chunks[i];
    if (!media || media.length === 0) continue;
    try {
      decoder.decodeInto(media, out.subarray(offsets[i], offsets[i + 1]), 0);
      decoded += 1;
    } catch (err) {
      onError(err);
    }
  }
  return decoded;
}

/**
 * The utterance's samples, mono at `sampleRate`: [{n (48 kHz samples), media: Opus payload | null}]
 * → Promise<Int16Array> of exactly Σn × sampleRate / 48000 samples, so the audio's length is known
 * before decoding.
 * @param {object} o sampleRate (a divisor of 48000; default 16000), onError(err) per undecodable
 *   packet, onDecoded(count) once at the end
 */
async function decodeSegment(chunks, {
  sampleRate = STT_RATE, onError = () => {}, onDecoded = () => {}, slicePackets = SLICE_PACKETS,
} = {}) {
  const ratio = SAMPLE_RATE / sampleRate; // every Opus frame (2.5 ms and up) is a whole number of samples
  const offsets = new Array(chunks.length + 1);
  let total = 0;
  for (let i = 0; i < chunks.length; i++) {
    offsets[i] = total;
    total += chunks[i].n / ratio;
  }
  offsets[chunks.length] = total;
  const out = allocWavPcm(total, sampleRate); // decoded in place: the STT request's WAV needs no copy
  const decoder = new OpusDecoder(sampleRate, 1);
  let decoded = 0;
  try {
    for (let from = 0; from < chunks.length; from += slicePackets) {
      if (from > 0) await nextTurn();
      decoded += decodeRange(decoder, chunks, offsets, out, from, Math.min(from + slicePackets, chunks.length), onError);
    }
  } finally {
    decoder.free();
  }
  onDecoded(decoded);
  return out;
}

module.exports = { decodeSegment, STT_RATE, SLICE_PACKETS };
