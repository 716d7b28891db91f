'use strict';
// Speech pipeline for one mic producer: VAD utterance → STT → translation → TTS → injection.
//
// Ordering: the utterances of one producer may overlap in flight (utterance n+1's STT request is
// sent at its speech end, not after n's TTS), so a slow stage shows as queueing in the services,
// as in a real streaming system. What stays ordered is every stage's *outcome*: each stage of
// utterance n+1 emits its event (or its pipelineError) only after the same stage of utterance n
// did, and TTS audio is enqueued in utterance order. The gates below implement that.

const crypto = require('crypto');
const { encodeWav } = require('./wav');
const { clipFromTts } = require('./ttsaudio');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('pipeline');
const STAGES = ['stt', 'translation', 'tts'];
const BOOT_ID = crypto.randomBytes(3).toString('hex'); // keeps utterance ids unique across restarts
let utteranceCounter = 0;

const round3 = (x) => Math.round(x * 1000) / 1000;

class StageFailure extends Error {
  constructor(stage, message) {
    super(message);
    this.stage = stage;
  }
}

class Pipeline {
  /**
   * @param {object} o producerId, peerId, sourceLanguage, targetLanguage, backends, injector,
   *   emit(event, payload) to the room, groundTruth, metrics, reportErrors (emit pipelineError?)
   */
  constructor(o) {
    Object.assign(this, o);
    this.seq = 0;
    this.closed = false;
    this.abort = new AbortController();
    this.tails = Object.fromEntries(STAGES.map((s) => [s, Promise.resolve()]));
  }

  /** VAD callback: start this utterance's run (not awaited: runs overlap, gates keep order). */
  onUtterance(u) {
    if (this.closed) return;
    const seq = ++this.seq;
    utteranceCounter += 1;
    const ctx = { utteranceId: `${BOOT_ID}-${utteranceCounter}`, seq, producerId: this.producerId };
    this.metrics.utterances.inc();
    this.groundTruth.write('speech_end', u.speechEndMs / 1000, {
      ...ctx,
      speechStart: u.speechStartMs / 1000,
      voicedMs: round3(u.voicedMs),
      audioMs: round3(u.audioMs),
      reason: u.reason,
    });
    log.debug(`utterance ${ctx.utteranceId} seq ${seq}: voiced ${u.voicedMs.toFixed(0)} ms, end by ${u.reason}`);
    // Claim this utterance's place in every stage's order now, synchronously.
    const gates = {};
    for (const stage of STAGES) {
      const prev = this.tails[stage];
      let release;
      const mine = new Promise((r) => { release = r; });
      this.tails[stage] = mine;
      gates[stage] = { prev, release };
    }
    this._run(u, ctx, gates)
      .catch((err) => log.error(`utterance ${ctx.utteranceId}: unexpected`, err))
      .finally(() => {
        for (const stage of STAGES) gates[stage].release(); // never leave a later utterance waiting
      });
  }

  async _run(u, ctx, gates) {
    const signal = this.abort.signal;
    const stageDone = (stage) => gates[stage].release();
    let stage = 'stt';
    try {
      // STT: request at once, publish in order. With the audio-level VAD the utterance's audio is
      // still being decoded (a promise; tap.js), with the energy VAD it is there already.
      const wav = encodeWav(await u.audio, u.sampleRate);
      const text = await this._settle(this.backends.transcribe(wav, this.sourceLanguage, signal));
      await gates.stt.prev;
      if (text.error) throw new StageFailure('stt', text.error);
      if (!text.value.trim()) throw new StageFailure('stt', 'empty transcript');
      const tTranscript = nowMs();
      this.emit('transcription', {
        ...ctx,
        peerId: this.peerId,
        text: text.value,
        language: this.sourceLanguage,
        final: true,
        speechStartTs: round3(u.speechStartMs),
        speechEndTs: round3(u.speechEndMs),
        serverTs: round3(tTranscript),
      });
      this.groundTruth.write('transcription', tTranscript / 1000, { ...ctx, text: text.value });
      this._stageOk('stt', tTranscript - u.speechEndMs);
      stageDone('stt');

      stage = 'translation';
      const translated = await this._settle(this.backends.translate(text.value, this.sourceLanguage, this.targetLanguage, signal));
      await gates.translation.prev;
      if (translated.error) throw new StageFailure('translation', translated.error);
      const tTranslation = nowMs();
      this.emit('translation', {
        ...ctx,
        text: translated.value,
        sourceLanguage: this.sourceLanguage,
        targetLanguage: this.targetLanguage,
        serverTs: round3(tTranslation),
      });
      this.groundTruth.write('translation', tTranslation / 1000, { ...ctx, text: translated.value });
      this._stageOk('translation', tTranslation - tTranscript);
      stageDone('translation');

      stage = 'tts';
      // Opus packets (Ogg) from the service, ready to packetize; a WAV answer is encoded as it plays.
      const audio = await this._settle(this.backends.synthesize(translated.value, this.targetLanguage, signal)
        .then(clipFromTts));
      await gates.tts.prev;
      if (audio.error) throw new StageFailure('tts', audio.error);
      if (this.closed) throw new StageFailure('tts', 'aborted: producer closed');
      const started = this.injector.enqueue(audio.value);
      stageDone('tts'); // the queue now holds our place; the next utterance may enqueue behind us
      let info;
      try {
        info = await started;
      } catch (err) {
        throw new StageFailure('tts', err.message);
      }
      this.emit('tts', {
        ...ctx,
        ttsProducerId: this.injector.producerId,
        rtpTimestamp: info.rtpTimestamp,
        durationMs: round3(info.durationMs),
        serverTs: round3(info.sentMs),
      });
      this.groundTruth.write('tts_first_packet', info.sentMs / 1000, {
        ...ctx,
        ttsProducerId: this.injector.producerId,
        rtpTimestamp: info.rtpTimestamp,
        durationMs: round3(info.durationMs),
        queuedMs: round3(info.queuedMs),
      });
      this._stageOk('tts', info.sentMs - tTranslation);
      this.metrics.stageLatency.observe({ stage: 'e2e' }, (info.sentMs - u.speechEndMs) / 1000);
    } catch (err) {
      const failed = err instanceof StageFailure ? err.stage : stage;
      this._fail(ctx, failed, err.message);
    }
  }

  /** Await a promise without throwing: {value} or {error: message}. */
  async _settle(promise) {
    try {
      return { value: await promise };
    } catch (err) {
      return { error: err.message };
    }
  }

  _stageOk(stage, latencyMs) {
    this.metrics.stageResults.inc({ stage, result: 'ok' });
    this.metrics.stageLatency.observe({ stage }, latencyMs / 1000);
  }

  _fail(ctx, stage, message) {
    const t = nowMs();
    this.metrics.stageResults.inc({ stage, result: 'error' });
    // The ground truth and metrics always record the failure; clients hear of it only if configured.
    this.groundTruth.write('error', t / 1000, { ...ctx, stage, error: message });
    if (this.reportErrors) this.emit('pipelineError', { ...ctx, stage, error: message, serverTs: round3(t) });
    (message.startsWith('aborted') ? log.debug : log.warn)(`utterance ${ctx.utteranceId} failed at ${stage}: ${message}`);
  }

  /** Abort in-flight requests; their utterances end with pipelineError "aborted: producer closed". */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
  }
}

module.exports = { Pipeline };
