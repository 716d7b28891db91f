"""Translation service: ``POST /translate`` ``{"text", "source", "target"}`` → ``{"text", "engine", ...}``.

Engines:
* ``model``: a fixture's reference translation when the text is a known transcript (compared
  case- and punctuation-insensitively), else a marked pass-through ``[es] <text>``; modelled latency.
* ``real``: Apertium as a subprocess (``apertium -u eng-spa``, text on stdin), en→es and es→en.

Run: ``python -m sut.services.translation --config default`` or ``--stack-json PATH``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Protocol

from aiohttp import web

from sut.services.common import (
    STATE_KEY,
    BadRequest,
    LatencySampler,
    ServiceArgs,
    ServiceState,
    StartupError,
    WorkerPool,
    make_app,
    read_json_object,
    require_str,
    run_service,
    set_log_detail,
    short,
    sleep_remaining,
)
from sut.services.corpus import CorpusEntry, CorpusError, load_corpus, normalise_text

APERTIUM_MODES = {("en", "es"): "eng-spa", ("es", "en"): "spa-eng"}
APERTIUM_TIMEOUT_S = 20.0
# `-u` already drops apertium's '*' before unknown words; '#' (generation gaps) and '@' (transfer
# gaps) have no such switch, so strip any marker glued to the start of a word.
_MARKERS = re.compile(r"(?<![\w])[*#@](?=\w)")


def lang(code: str) -> str:
    """'en-US' → 'en': engines and fixtures speak primary language subtags."""
    return code.strip().lower().replace("_", "-").split("-")[0]


class TranslationEngine(Protocol):
    name: str

    def check_pair(self, source: str, target: str) -> None: ...

    async def translate(self, text: str, source: str, target: str) -> str: ...


ENGINE_KEY: web.AppKey[TranslationEngine] = web.AppKey("translation_engine")


class ModelTranslation:
    name = "model"

    def __init__(self, corpus: list[CorpusEntry], sampler: LatencySampler) -> None:
        self.sampler = sampler
        # (language, normalised text) → every rendering of that utterance, so lookups work both
        # ways (en→es with the transcript, es→en with the reference translation).
        self.table: dict[tuple[str, str], dict[str, str]] = {}
        for entry in corpus:
            renderings = {lang(entry.language): entry.transcript}
            renderings.update({lang(k): v for k, v in entry.translations.items()})
            for language, text in renderings.items():
                self.table.setdefault((language, normalise_text(text)), renderings)

    def check_pair(self, source: str, target: str) -> None:
        pass  # any pair: unknown text is passed through, marked with the target language

    def lookup(self, text: str, source: str, target: str) -> str | None:
        renderings = self.table.get((source, normalise_text(text)))
        return None if renderings is None else renderings.get(target)

    async def translate(self, text: str, source: str, target: str) -> str:
        started = time.perf_counter()
        delay_ms = self.sampler.draw_ms()
        found = self.lookup(text, source, target)
        await sleep_remaining(delay_ms, started)
        return found if found is not None else f"[{target}] {text}"


class ApertiumTranslation:
    name = "real"

    def check_pair(self, source: str, target: str) -> None:
        if (source, target) not in APERTIUM_MODES:
            supported = ", ".join(f"{s}→{t}" for s, t in APERTIUM_MODES)
            raise BadRequest(
                f"language pair {source}→{target} is not supported by apertium (supported: {supported})"
            )

    async def translate(self, text: str, source: str, target: str) -> str:
        mode = APERTIUM_MODES[(source, target)]
        # A subprocess, not a thread: the loop stays free, and each call is independent of the others.
        proc = await asyncio.create_subprocess_exec(
            "apertium", "-u", mode,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        # One line in, one line out: apertium translates line by line and we answer one string.
        line = " ".join(text.split()) + "\n"
        try:
            out, err = await asyncio.wait_for(proc.communicate(line.encode()), APERTIUM_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"apertium {mode} took longer than {APERTIUM_TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            message = err.decode(errors="replace")[:200]
            raise RuntimeError(f"apertium {mode} failed ({proc.returncode}): {message}")
        # Also collapse whitespace: apertium leaves double spaces where it dropped a word.
        return " ".join(_MARKERS.sub("", out.decode(errors="replace")).split())


async def check_apertium() -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "apertium", "-l", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise StartupError(
            "real translation needs apertium (apt-get install apertium apertium-eng-spa)"
        ) from None
    out, _ = await proc.communicate()
    modes = set(out.decode().split())
    missing = [m for m in APERTIUM_MODES.values() if m not in modes]
    if missing:
        raise StartupError(f"apertium modes missing: {', '.join(missing)} (apt-get install apertium-eng-spa)")


async def translate(request: web.Request) -> web.Response:
    t0 = time.perf_counter()
    doc = await read_json_object(request)
    text = require_str(doc, "text")
    source, target = lang(require_str(doc, "source")), lang(require_str(doc, "target"))
    engine = request.app[ENGINE_KEY]
    engine.check_pair(source, target)
    state = request.app[STATE_KEY]
    async with state.pool.slot() as slot:
        translated = await engine.translate(text, source, target)
    processing_ms = (time.perf_counter() - t0) * 1000.0
    set_log_detail(request, f"{source}→{target} q={slot.queue_ms:.0f}ms {short(text)} → {short(translated)}")
    return web.json_response({
        "text": translated,
        "engine": engine.name,
        "source": source,
        "target": target,
        "processing_ms": round(processing_ms, 1),  # arrival → answer, queueing included
        "queue_ms": round(slot.queue_ms, 1),
    })


async def build(args: ServiceArgs) -> web.Application:
    svc = args.service
    engine: TranslationEngine
    extra: dict[str, object] = {}
    if svc.engine == "real":
        await check_apertium()
        engine = ApertiumTranslation()
    else:
        try:
            corpus = load_corpus(args.stack.fixtures)
        except CorpusError as exc:
            raise StartupError(f"model translation needs the fixture corpus: {exc}") from None
        engine = ModelTranslation(corpus, LatencySampler(svc.latency, args.seed))
        extra["corpus"] = len(corpus)
    app = make_app(ServiceState("translation", engine.name, WorkerPool(svc.workers), extra),
                   [web.post("/translate", translate)])
    app[ENGINE_KEY] = engine
    return app


def main(argv: list[str] | None = None) -> None:
    run_service("translation", build, argv)


if __name__ == "__main__":
    main()
