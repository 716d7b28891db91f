'use strict';
// Speech pipeline for one mic producer: VAD utterance → STT → per target language: translation →
// TTS → that language's injector (one TTS producer per language; room.js decides the languages).
//
// STT runs once per utterance; translation and TTS run once per (utterance, target language).
// Ordering: the utterances of one producer may overlap in flight (utterance n+1's STT request is
// sent at its speech end, not after n's TTS), so a slow stage shows as queueing in the services,
// as in a real streaming system. What stays ordered is every stage's *outcome*: each stage of
// utterance n+1 emits its event (or its pipelineError) only after the same stage of utterance n
// did — per language for translation and TTS, so a slow language never holds back another — and
// each language's TTS audio is enqueued in utterance order. The gates below implement that.
//
// An utterance is translated into the languages the pipeline had when the utterance ended (its
// speech end): a language added later (a listener joined) is served from the next utterance on.

const crypto = require('crypto');
const { encodeWav } = require('./wav');
const { clipFromTts } = require('./ttsaudio');
const { nowMs } = require('./clock');
const { logger } = require('./logger');

const log = logger('pipeline');
const LANGUAGE_STAGES = ['translation', 'tts'];
const BOOT_ID = crypto.randomBytes(3).toString('hex'); // keeps utterance ids unique across restarts
let utteranceCounter = 0;

const round3 = (x) => Math.round(x * 1000) / 1000;

class StageFailure extends Error {
  constructor(stage, message) {
    super(message);
    this.stage = stage;
  }
}

/** A place in one stage's order: wait for `prev`, then `release` to let the next utterance pass. */
function claim(tails, key) {
  const prev = tails.get(key) || Promise.resolve();
  let release;
  const mine = new Promise((r) => { release = r; });
  tails.set(key, mine);
  return { prev, release };
}

class Pipeline {
  /**
   * @param {object} o producerId, peerId, sourceLanguage, backends, emit(event, payload) to the room,
   *   groundTruth, metrics, reportErrors (emit pipelineError?); outputs: optional Map targetLanguage →
   *   injector (more through addLanguage)
   */
  constructor({ outputs, ...o }) {
    Object.assign(this, o);
    this.outputs = new Map(outputs || []); // targetLanguage → Injector (its TTS producer)
    this.seq = 0;
    this.closed = false;
    this.abort = new AbortController();
    this.tails = new Map(); // 'stt' | `${stage}:${language}` → the last claimed place's promise
  }

  /** Translate into `language` too, played by `injector` (from the next utterance on). */
  addLanguage(language, injector) {
    this.outputs.set(language, injector);
  }

  get languages() {
    return [...this.outputs.keys()];
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
    const stt = claim(this.tails, 'stt');
    const outputs = [...this.outputs].map(([language, injector]) => ({
      language,
      injector,
      gates: Object.fromEntries(LANGUAGE_STAGES.map((s) => [s, claim(this.tails, `${s}:${language}`)])),
    }));
    const all = [stt, ...outputs.flatMap((o) => Object.values(o.gates))];
    this._run(u, ctx, stt, outputs)
      .catch((err) => log.error(`utterance ${ctx.utteranceId}: unexpected`, err))
      .finally(() => {
        for (const gate of all) gate.release(); // never leave a later utterance waiting
      });
  }

  async _run(u, ctx, sttGate, outputs) {
    let transcript;
    try {
      // STT: request at once, publish in order. With the audio-level VAD the utterance's audio is
      // still being decoded (a promise; tap.js), with the energy VAD it is there already.
      const wav = encodeWav(await u.audio, u.sampleRate);
      const text = await this._settle(this.backends.transcribe(wav, this.sourceLanguage, this.abort.signal));
      await sttGate.prev;
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
      transcript = { text: text.value, tMs: tTranscript };
    } catch (err) {
      this._fail(u, ctx, err instanceof StageFailure ? err.stage : 'stt', err.message, null);
      return;
    } finally {
      sttGate.release();
    }
    await Promise.all(outputs.map((o) => this._runLanguage(u, ctx, transcript, o)));
  }

  /** Translation and TTS of one utterance into one language; failures end this language only. */
  async _runLanguage(u, ctx, transcript, { language, injector, gates }) {
    let stage = 'translation';
    try {
      const translated = await this._settle(this.backends.translate(transcript.text, this.sourceLanguage, language,
        this.abort.signal));
      await gates.translation.prev;
      if (translated.error) throw new StageFailure('translation', translated.error);
      const tTranslation = nowMs();
      this.emit('translation', {
        ...ctx,
        text: translated.value,
        sourceLanguage: this.sourceLanguage,
        targetLanguage: language,
        serverTs: round3(tTranslation),
      });
      this.groundTruth.write('translation', tTranslation / 1000, { ...ctx, targetLanguage: language, text: translated.value });
      this._stageOk('translation', tTranslation - transcript.tMs);
      gates.translation.release();

      stage = 'tts';
      // Opus packets (Ogg) from the service, ready to packetize; a WAV answer is encoded as it plays.
      const audio = await this._settle(this.backends.synthesize(translated.value, language, this.abort.signal)
        .then(clipFromTts));
      await gates.tts.prev;
      if (audio.error) throw new StageFailure('tts', audio.error);
      if (this.closed) throw new StageFailure('tts', 'aborted: producer closed');
      const started = injector.enqueue(audio.value);
      gates.tts.release(); // the queue now holds our place; the next utterance may enqueue behind us
      let info;
      try {
        info = await started;
      } catch (err) {
        throw new StageFailure('tts', err.message);
      }
      this.emit('tts', {
        ...ctx,
        language,
        ttsProducerId: injector.producerId,
        rtpTimestamp: info.rtpTimestamp,
        durationMs: round3(info.durationMs),
        serverTs: round3(info.sentMs),
      });
      this.groundTruth.write('tts_first_packet', info.sentMs / 1000, {
        ...ctx,
        targetLanguage: language,
        ttsProducerId: injector.producerId,
        rtpTimestamp: info.rtpTimestamp,
        durationMs: round3(info.durationMs),
        queuedMs: round3(info.queuedMs),
      });
      this._stageOk('tts', info.sentMs - tTranslation);
      this.metrics.stageLatency.observe({ stage: 'e2e' }, (info.sentMs - u.speechEndMs) / 1000);
    } catch (err) {
      this._fail(u, ctx, err instanceof StageFailure ? err.stage : stage, err.message, language);
    } finally {
      // After the outcome is out; a failed language must not wait for the other languages' runs.
      for (const gate of Object.values(gates)) gate.release();
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

  /**
   * A failed stage of utterance `u`; `language` names the target language of a translation or TTS
   * failure (else null). The event carries the utterance's speech span, as `transcription` does: an
   * STT failure has no transcription, and a client matching segments by span needs it to place this.
   */
  _fail(u, ctx, stage, message, language) {
    const t = nowMs();
    const target = language === null ? {} : { targetLanguage: language };
    this.metrics.stageResults.inc({ stage, result: 'error' });
    // The ground truth and metrics always record the failure; clients hear of it only if configured.
    this.groundTruth.write('error', t / 1000, { ...ctx, ...target, stage, error: message });
    if (this.reportErrors) {
      this.emit('pipelineError', {
        ...ctx,
        ...target,
        stage,
        error: message,
        speechStartTs: round3(u.speechStartMs),
        speechEndTs: round3(u.speechEndMs),
        serverTs: round3(t),
      });
    }
    const where = language === null ? stage : `${stage} (${language})`;
    (message.startsWith('aborted') ? log.debug : log.warn)(`utterance ${ctx.utteranceId} failed at ${where}: ${message}`);
  }

  /** Abort in-flight requests; their utterances end with pipelineError "aborted: producer closed". */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
  }
}

module.exports = { Pipeline };
