"""STT service: ``POST /transcribe?language=en`` with a mono 16-bit WAV body.

Engines:
* ``model``: recognises which fixture the audio is (sut/services/envelope.py) and answers its
  transcript (``""`` and ``matched: false`` when nothing matches), after the modelled latency. Audio
  holding several fixtures in a row is transcribed too (``ModelStt``).
* ``real``: pocketsphinx (en-us model bundled in the PyPI wheel) in a process pool. pocketsphinx has
  no model for any other language, so for a language of the fixture corpus other than English (the
  synthesized Spanish clips) the real engine falls back to the model engine's corpus match, with no
  modelled latency: the answer says so (``"fallback": "corpus-match"``), and its timing is the
  matching's, not a recogniser's. A language neither covers is a 400, as before.

Run: ``python -m sut.services.stt --config default`` or ``--stack-json PATH`` (from sut/stack.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import soundfile as sf
from aiohttp import web

from sut.config import LatencyModel
from sut.services import sphinx
from sut.services.audio import read_wav_mono16
from sut.services.common import (
    STATE_KEY,
    BadRequest,
    LatencySampler,
    ServiceArgs,
    ServiceState,
    Slot,
    StartupError,
    WorkerPool,
    make_app,
    run_service,
    set_log_detail,
    short,
    sleep_remaining,
)
from sut.services.corpus import CorpusEntry, CorpusError, load_corpus
from sut.services.envelope import EnvelopeMatcher


@dataclass
class SttResult:
    text: str
    matched: bool | None = None  # model engine only
    fixture_id: str | None = None
    score: float | None = None
    offset_ms: float | None = None
    reason: str | None = None
    fallback: str | None = None  # real engine: "corpus-match" when it had no model for the language
    parts: int | None = None  # model engine: fixtures recognised in audio split at its pauses


class SttEngine(Protocol):
    name: str

    def check_language(self, language: str) -> None:
        """Raise BadRequest before a worker slot is taken if the engine cannot serve ``language``."""

    async def transcribe(self, samples: np.ndarray, rate: int, language: str, slot: Slot) -> SttResult: ...

    async def close(self) -> None: ...


ENGINE_KEY: web.AppKey[SttEngine] = web.AppKey("stt_engine")


class ModelStt:
    """Fixture recognition by energy envelope + latency drawn from the configured model.

    The whole received clip is matched first (a fixture, with whatever silence the VAD left around it).
    When that fails, or matches one fixture but leaves a stretch of speech wholly outside it (a long
    fixture passes the duration check with a short sentence beside it), the clip is split at its pauses
    of 0.3 s or more -- longer than any pause inside a fixture -- and each voiced part is matched on its
    own, against the same candidates (the request's language). The answer is then the matched
    transcripts joined by a space, in order, with ``fixture_id`` the ids joined by ``+`` and ``parts``
    their number (``score``: the lowest part score; ``offset_ms``: the first's). So a VAD that merged
    two or three sentences of a monologue gets them all back, as from a real recogniser. A part that
    matches nothing is left out (its words are lost, as a recogniser might lose them); when no part
    matches, the answer is the whole clip's (``""``, ``matched: false`` when that failed too). One
    latency draw per request, whatever the number of parts.
    """

    name = "model"

    def __init__(self, corpus: list[CorpusEntry], sampler: LatencySampler) -> None:
        self.sampler = sampler
        self.matcher = EnvelopeMatcher()
        self.entries = {e.id: e for e in corpus}
        for entry in corpus:
            try:
                samples, rate = sf.read(entry.path, dtype="int16", always_2d=True)
            except (OSError, sf.LibsndfileError) as exc:
                raise StartupError(f"fixture '{entry.id}': cannot read {entry.path}: {exc}") from None
            mono = samples.mean(axis=1)
            self.matcher.add(entry.id, mono, int(rate), entry.speech_start_s, entry.speech_end_s)

    def check_language(self, language: str) -> None:
        pass  # any language: one without fixtures simply matches nothing

    def serves(self, language: str) -> bool:
        """Whether the corpus has a clip in ``language``."""
        return any(e.language.split("-")[0] == language for e in self.entries.values())

    async def transcribe(self, samples: np.ndarray, rate: int, language: str, slot: Slot) -> SttResult:
        started = time.perf_counter()
        delay_ms = self.sampler.draw_ms()
        candidates = {i for i, e in self.entries.items() if e.language.split("-")[0] == language}
        # Matching is numpy work (a few ms per fixture); a thread keeps the loop free meanwhile.
        result = await asyncio.to_thread(self.recognise, samples, rate, candidates)
        await sleep_remaining(delay_ms, started)
        return result

    def recognise(self, samples: np.ndarray, rate: int, candidates: set[str]) -> SttResult:
        res = self.matcher.match(samples, rate, candidates)
        # Split only when the whole clip failed or left speech outside its match: a single fixture
        # costs what it always did. A match that left speech out is kept unless the split finds more.
        split = not res.matched or res.uncovered
        parts = self.matcher.match_parts(samples, rate, candidates) if split else []
        if len(parts) > (1 if res.matched else 0):
            return SttResult(text=" ".join(self.entries[p.id].transcript for p in parts if p.id),
                             matched=True, fixture_id="+".join(p.id for p in parts if p.id),
                             score=round(min(p.score for p in parts), 3), offset_ms=parts[0].offset_ms,
                             parts=len(parts))
        text = self.entries[res.id].transcript if res.matched and res.id else ""
        return SttResult(text=text, matched=res.matched, fixture_id=res.id, score=round(res.score, 3),
                         offset_ms=res.offset_ms, reason=res.reason or None)

    async def close(self) -> None:
        pass


class RealStt:
    """pocketsphinx, one decoder per worker process (see sut/services/sphinx.py for why processes)."""

    name = "real"
    languages = ("en",)

    def __init__(self, workers: int, fallback: ModelStt | None = None) -> None:
        self.workers = workers
        self.fallback = fallback  # corpus match for the corpus's other languages (module docstring)
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that already runs an event loop and threads is unsafe.
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=sphinx.init_worker)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Start every worker (and load every decoder) now, so the first requests do not pay for it.
        ready = await asyncio.gather(*(loop.run_in_executor(self.pool, sphinx.warm_up, 0.5)
                                       for _ in range(self.workers)))
        if not all(ready):
            raise StartupError("pocketsphinx decoder failed to initialise")

    def check_language(self, language: str) -> None:
        if language in self.languages or (self.fallback is not None and self.fallback.serves(language)):
            return
        raise BadRequest(f"language '{language}' is not supported by the real STT engine (en only, and "
                         "no fixture of the corpus is in that language)")

    async def transcribe(self, samples: np.ndarray, rate: int, language: str, slot: Slot) -> SttResult:
        if language not in self.languages and self.fallback is not None:
            result = await self.fallback.transcribe(samples, rate, language, slot)
            result.fallback = "corpus-match"
            return result
        loop = asyncio.get_running_loop()
        pool = self.pool
        try:
            text, _ = await loop.run_in_executor(pool, sphinx.decode, samples.tobytes(), rate)
        except BrokenProcessPool:
            # A decoder process died (OOM killer, native crash): answer 500 for this request, but
            # replace the pool so the service recovers instead of failing every later request.
            if self.pool is pool:
                self.pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError("a pocketsphinx worker process died; the pool was restarted") from None
        return SttResult(text=text)

    async def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


async def transcribe(request: web.Request) -> web.Response:
    t0 = time.perf_counter()
    language = request.query.get("language", "en").strip().lower() or "en"
    samples, rate = read_wav_mono16(await request.read())
    audio_ms = 1000.0 * len(samples) / rate
    state = request.app[STATE_KEY]
    engine = request.app[ENGINE_KEY]
    engine.check_language(language)
    async with state.pool.slot() as slot:
        result = await engine.transcribe(samples, rate, language, slot)
    processing_ms = (time.perf_counter() - t0) * 1000.0
    body = {
        "text": result.text,
        "language": language,
        "engine": engine.name,
        "audio_ms": round(audio_ms, 1),
        "processing_ms": round(processing_ms, 1),  # arrival → answer, queueing included
        "queue_ms": round(slot.queue_ms, 1),
        **{k: v for k, v in asdict(result).items() if k != "text" and v is not None},
    }
    match = ""
    if result.matched is not None:
        match = f"match={result.fixture_id if result.matched else '-'} score={result.score} "
    set_log_detail(
        request, f"audio={audio_ms / 1000:.2f}s q={slot.queue_ms:.0f}ms {match}{short(result.text)}"
    )
    return web.json_response(body)


async def real_fallback(args: ServiceArgs) -> ModelStt | None:
    """The corpus match for the corpus's clips in languages pocketsphinx lacks; None if there are none
    (or no readable corpus: the real engine needs none for English)."""
    try:
        corpus = load_corpus(args.stack.fixtures)
    except CorpusError:
        return None
    corpus = [e for e in corpus if e.language.split("-")[0] not in RealStt.languages]
    if not corpus:
        return None
    return await asyncio.to_thread(ModelStt, corpus, LatencySampler(LatencyModel("constant", ms=0)))


async def build(args: ServiceArgs) -> web.Application:
    svc = args.service
    engine: ModelStt | RealStt
    extra: dict[str, object] = {}
    if svc.engine == "real":
        engine = RealStt(svc.workers, await real_fallback(args))
        await engine.start()
        if engine.fallback is not None:
            extra["fallback_languages"] = sorted({e.language for e in engine.fallback.entries.values()})
    else:
        try:
            corpus = load_corpus(args.stack.fixtures)
        except CorpusError as exc:
            raise StartupError(f"model STT needs the fixture corpus: {exc}") from None
        engine = await asyncio.to_thread(ModelStt, corpus, LatencySampler(svc.latency, args.seed))
        extra["corpus"] = len(corpus)
    state = ServiceState("stt", engine.name, WorkerPool(svc.workers), extra)
    app = make_app(state, [web.post("/transcribe", transcribe)])
    app[ENGINE_KEY] = engine

    async def close(_: web.Application) -> None:
        await engine.close()

    app.on_cleanup.append(close)
    return app


def main(argv: list[str] | None = None) -> None:
    run_service("stt", build, argv)


if __name__ == "__main__":
    main()
