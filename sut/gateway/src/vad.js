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
//
// What the VAD keeps of each frame is opaque to it (`media`): decoded samples on the energy path
// (push), or, on the audio-level path, the packet's Opus payload (unit: one packet is one unit, its
// voice decision being the packet's own), decoded only when an utterance ends. Either way it keeps
// at most the preroll window plus one utterance (maxUtteranceMs), and `assemble` turns an
// utterance's media into its audio.

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
   *   onUtterance(u) with u = {speechStartMs, speechEndMs, voicedMs, audioMs, audio, sampleRate, reason},
   *   assemble(chunks) → u.audio, from the utterance's [{n, media}] in order (default: the media are
   *   Int16Array frames, concatenated; it may return a promise of the Int16Array)
   */
  constructor({ thresholdDbfs, hangoverMs, maxUtteranceMs, prerollMs = 0, sampleRate = 48000, onUtterance, assemble = concatPcm }) {
    this.threshold = thresholdDbfs;
    this.sampleRate = sampleRate;
    this.frameSamples = (sampleRate * FRAME_MS) / 1000;
    this.hangoverSamples = Math.round((hangoverMs * sampleRate) / 1000);
    this.maxSamples = Math.round((maxUtteranceMs * sampleRate) / 1000);
    this.prerollSamples = Math.round((prerollMs * sampleRate) / 1000);
    this.onUtterance = onUtterance;
    this.assemble = assemble;
    this.preroll = []; // recent unvoiced {n, media} while idle
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
      const frame = data.subarray(off, off + this.frameSamples);
      const v = voiced === null ? rmsDbfs(frame) >= this.threshold : voiced;
      this._frame(frame.length, recvMs, v, frame);
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

  /**
   * Feed one packet as one unit of n samples with its own voice decision (audio-level path); media is
   * what the utterance keeps of it (the Opus payload; null for a lost packet: silence).
   */
  unit(n, recvMs, voiced, media) {
    if (n > 0) this._frame(n, recvMs, voiced, media);
  }

  /** Close the open utterance now (packets stopped, or the producer closed). */
  flush(reason = 'idle') {
    if (this.utt) this._end(reason);
  }

  _frame(n, recvMs, voiced, media) {
    const u = this.utt;
    if (!u) {
      if (voiced) {
        this._start(n, recvMs, media);
      } else if (this.prerollSamples > 0) {
        this.preroll.push({ n, media: keep(media) });
        this.prerollLen += n;
        while (this.prerollLen - this.preroll[0].n >= this.prerollSamples) {
          this.prerollLen -= this.preroll.shift().n;
        }
      }
      return;
    }
    u.chunks.push({ n, media: keep(media) });
    u.speechSamples += n;
    if (voiced) {
      u.lastVoicedRecvMs = recvMs;
      u.voicedThroughSamples = u.speechSamples;
      u.unvoicedRun = 0;
    } else {
      u.unvoicedRun += n;
    }
    if (u.unvoicedRun >= this.hangoverSamples) this._end('hangover');
    else if (u.speechSamples >= this.maxSamples) this._end('max');
  }

  _start(n, recvMs, media) {
    this.utt = {
      chunks: [...this.preroll, { n, media: keep(media) }],
      speechSamples: n, // from the first voiced frame on
      voicedThroughSamples: n,
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
    const total = u.chunks.reduce((sum, c) => sum + c.n, 0);
    this.onUtterance({
      speechStartMs: u.speechStartMs,
      speechEndMs: u.lastVoicedRecvMs,
      voicedMs: (u.voicedThroughSamples * 1000) / this.sampleRate, // first to last voiced frame
      audioMs: (total * 1000) / this.sampleRate,
      audio: this.assemble(u.chunks),
      sampleRate: this.sampleRate,
      reason,
    });
  }
}

/** Decoded frames are views into a packet's samples: keep a copy. Payloads are kept as they are. */
function keep(media) {
  return media instanceof Int16Array ? media.slice() : media;
}

/** The default assembly: the utterance's decoded frames, concatenated. */
function concatPcm(chunks) {
  const total = chunks.reduce((sum, c) => sum + c.n, 0);
  const audio = new Int16Array(total);
  let off = 0;
  for (const c of chunks) {
    audio.set(c.media, off);
    off += c.n;
  }
  return audio;
}

module.exports = { Vad, rmsDbfs, concatPcm, FRAME_MS };
