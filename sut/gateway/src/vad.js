'use strict';
// Energy VAD over 20 ms frames: the segmentation the pipeline (and the tester's ground truth)
// is built on, so its rules are exact and documented:
//   * a frame is voiced when its RMS level in dBFS >= thresholdDbfs (source "energy"), or, with
//     source "audio-level", when the sender's RFC 6464 level in the packet's ssrc-audio-level header
//     is above levelThresholdDbov (-level > threshold; browsers send it from the captured audio and
//     SFUs segment on it); packets without the header fall back to energy;
//   * an utterance starts at the first voiced frame (the audio sent to STT also carries up to
//     prerollMs of the frames before it, so word onsets are not clipped);
//   * it ends once hangoverMs of audio has passed without a voiced frame, or when no packet at
//     all arrives for hangoverMs (the tap calls flush()), or when it reaches maxUtteranceMs
//     (then the next voiced frame starts a new utterance);
//   * speech end = receive time of the packet carrying the LAST voiced frame.

const FRAME_MS = 20;

/** RMS of int16 samples in dBFS (full scale = 32768); -Infinity for digital silence. */
function rmsDbfs(samples, start = 0, end = samples.length) {
  const n = end - start;
  if (n <= 0) return -Infinity;
  let sum = 0;
  for (let i = start; i < end; i++) sum += samples[i] * samples[i];
  if (sum === 0) return -Infinity;
  return 20 * Math.log10(Math.sqrt(sum / n) / 32768);
}

class Vad {
  /**
   * @param {object} opts thresholdDbfs, hangoverMs, maxUtteranceMs, prerollMs, sampleRate,
   *   onUtterance(u) with u = {speechStartMs, speechEndMs, voicedMs, audio: Int16Array, sampleRate, reason}
   */
  constructor({ thresholdDbfs, hangoverMs, maxUtteranceMs, prerollMs = 0, sampleRate = 48000, onUtterance }) {
    this.threshold = thresholdDbfs;
    this.sampleRate = sampleRate;
    this.frameSamples = (sampleRate * FRAME_MS) / 1000;
    this.hangoverSamples = Math.round((hangoverMs * sampleRate) / 1000);
    this.maxSamples = Math.round((maxUtteranceMs * sampleRate) / 1000);
    this.prerollSamples = Math.round((prerollMs * sampleRate) / 1000);
    this.onUtterance = onUtterance;
    this.preroll = []; // recent unvoiced frames while idle
    this.prerollLen = 0;
    this.utt = null; // the open utterance
    this.carry = null; // samples of an incomplete 20 ms frame awaiting the next packet
    this.carryRecvMs = 0;
  }

  get inSpeech() {
    return this.utt !== null;
  }

  /**
   * Feed one packet's decoded mono samples, received at recvMs (gateway monotonic ms).
   * voiced: the packet's own voice decision (audio-level source), or null to measure energy.
   */
  push(samples, recvMs, voiced = null) {
    let data = samples;
    if (this.carry) {
      // Packets of 20 ms never leave a carry; this keeps 10/40/60 ms packetisation exact anyway.
      const joined = new Int16Array(this.carry.length + samples.length);
      joined.set(this.carry);
      joined.set(samples, this.carry.length);
      data = joined;
      this.carry = null;
    }
    let off = 0;
    for (; off + this.frameSamples <= data.length; off += this.frameSamples) {
      this._frame(data.subarray(off, off + this.frameSamples), recvMs, voiced);
    }
    if (off < data.length) {
      this.carry = data.slice(off);
      this.carryRecvMs = recvMs;
    }
  }

  /** Stand-in for lost packets: the missing audio counts as unvoiced silence. */
  gap(missingSamples, recvMs) {
    if (missingSamples > 0) this.push(new Int16Array(missingSamples), recvMs);
  }

  /** Close the open utterance now (packets stopped, or the producer closed). */
  flush(reason = 'idle') {
    if (this.utt) this._end(reason);
  }

  _frame(frame, recvMs, packetVoiced = null) {
    const voiced = packetVoiced === null ? rmsDbfs(frame) >= this.threshold : packetVoiced;
    const u = this.utt;
    if (!u) {
      if (voiced) {
        this._start(frame, recvMs);
      } else if (this.prerollSamples > 0) {
        this.preroll.push(frame.slice());
        this.prerollLen += frame.length;
        while (this.prerollLen - this.preroll[0].length >= this.prerollSamples) {
          this.prerollLen -= this.preroll.shift().length;
        }
      }
      return;
    }
    u.chunks.push(frame.slice());
    u.speechSamples += frame.length;
    if (voiced) {
      u.lastVoicedRecvMs = recvMs;
      u.voicedThroughSamples = u.speechSamples;
      u.unvoicedRun = 0;
    } else {
      u.unvoicedRun += frame.length;
    }
    if (u.unvoicedRun >= this.hangoverSamples) this._end('hangover');
    else if (u.speechSamples >= this.maxSamples) this._end('max');
  }

  _start(frame, recvMs) {
    this.utt = {
      chunks: [...this.preroll, frame.slice()],
      prerollSamples: this.prerollLen,
      speechSamples: frame.length, // from the first voiced frame on
      voicedThroughSamples: frame.length,
      unvoicedRun: 0,
      speechStartMs: recvMs,
      lastVoicedRecvMs: recvMs,
    };
    this.preroll = [];
    this.prerollLen = 0;
  }

  _end(reason) {
    const u = this.utt;
    this.utt = null;
    const total = u.chunks.reduce((n, c) => n + c.length, 0);
    const audio = new Int16Array(total);
    let off = 0;
    for (const c of u.chunks) {
      audio.set(c, off);
      off += c.length;
    }
    this.onUtterance({
      speechStartMs: u.speechStartMs,
      speechEndMs: u.lastVoicedRecvMs,
      voicedMs: (u.voicedThroughSamples * 1000) / this.sampleRate, // first to last voiced frame
      audioMs: (total * 1000) / this.sampleRate,
      audio,
      sampleRate: this.sampleRate,
      reason,
    });
  }
}

module.exports = { Vad, rmsDbfs, FRAME_MS };
