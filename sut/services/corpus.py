"""The fixture corpus as the model engines see it (fixtures/audio/manifest.json).

The tester has its own loader (loadtest/fixtures.py); the stack reads the manifest itself so the
system under test does not import the tester. Only the fields the engines need are read.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CorpusError(ValueError):
    """The manifest is missing or malformed; the message names the file and entry."""


@dataclass(frozen=True)
class CorpusEntry:
    id: str
    path: Path
    language: str
    transcript: str
    translations: dict[str, str] = field(default_factory=dict)
    speech_start_s: float | None = None
    speech_end_s: float | None = None


def normalise_text(text: str) -> str:
    """Case- and punctuation-insensitive form used to look transcripts up."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s']|_", " ", text)  # keep apostrophes: "don't" ≠ "don t" for lookups
    text = text.replace("'", "")
    return " ".join(text.split())


def _entries(doc: Any, where: Path) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("fixtures", "utterances", "clips", "items"):
            if isinstance(doc.get(key), list):
                return doc[key]
    raise CorpusError(f"{where}: expected a list of fixtures (or an object with a 'fixtures' list)")


def load_corpus(manifest: Path) -> list[CorpusEntry]:
    if not manifest.exists():
        raise CorpusError(f"fixture manifest not found: {manifest} (set [stack] fixtures)")
    try:
        doc = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{manifest}: not valid JSON: {exc}") from None
    out: list[CorpusEntry] = []
    for i, item in enumerate(_entries(doc, manifest)):
        where = f"{manifest} entry {i}"
        if not isinstance(item, dict):
            raise CorpusError(f"{where}: must be an object")
        for key in ("id", "file", "transcript"):
            if not isinstance(item.get(key), str):
                raise CorpusError(f"{where}: missing or non-string '{key}'")
        translations = item.get("translations") or {}
        if not isinstance(translations, dict):
            raise CorpusError(f"{where}: 'translations' must be an object of language → text")
        out.append(
            CorpusEntry(
                id=item["id"],
                path=(manifest.parent / item["file"]).resolve(),
                language=str(item.get("language", "en")),
                transcript=item["transcript"],
                translations={str(k): str(v) for k, v in translations.items()},
                speech_start_s=_opt_float(item.get("speech_start_s")),
                speech_end_s=_opt_float(item.get("speech_end_s")),
            )
        )
    return out


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
