"""Quality of what came back: WER of the transcript, chrF of the translation, against the fixture."""

from __future__ import annotations

import re
from dataclasses import dataclass

import jiwer
from sacrebleu.metrics import CHRF

_CHRF = CHRF()
_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)


@dataclass(frozen=True)
class Quality:
    wer: float | None
    chrf: float | None


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: STT engines disagree on casing and punctuation."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def word_error_rate(hypothesis: str, reference: str) -> float:
    ref = normalise(reference)
    hyp = normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def chrf(hypothesis: str, reference: str) -> float:
    return float(_CHRF.sentence_score(hypothesis, [reference]).score)


def score(transcript: str | None, reference_transcript: str | None,
          translation: str | None, reference_translation: str | None) -> Quality:
    wer = None if transcript is None or reference_transcript is None else word_error_rate(
        transcript, reference_transcript)
    chrf_score = None if translation is None or not reference_translation else chrf(
        translation, reference_translation)
    return Quality(wer, chrf_score)
