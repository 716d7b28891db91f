#!/usr/bin/env python3
"""Sanity-check the fixture transcripts: decode every clip with pocketsphinx and print the WER.

    .venv/bin/python scripts/check_fixtures_asr.py [manifest.json]

pocketsphinx's bundled en-us model is a weak recogniser (the LibriVox clips come out at 20-40 %
WER), so this catches a wrong file or a transcript for another clip, not a single wrong word.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jiwer
import numpy as np
from pocketsphinx import Decoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy.signal import resample_poly  # noqa: E402

from loadtest.fixtures import DEFAULT_MANIFEST, load_manifest, read_mono  # noqa: E402

ASR_RATE = 16000  # the bundled model's rate


SPELLINGS = {"mr": "mister"}  # the recogniser's dictionary spelling → the transcripts' spoken form


def normalise(text: str) -> str:
    words = re.sub(r"[^a-z' ]", " ", text.lower()).split()
    return " ".join(SPELLINGS.get(w, w) for w in words)


def main(argv: list[str]) -> int:
    manifest = Path(argv[0]) if argv else DEFAULT_MANIFEST
    decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL")
    refs, hyps = [], []
    for fixture in load_manifest(manifest):
        if fixture.language != "en":  # the model is English; the Spanish clips are synthesized anyway
            continue
        samples, rate = read_mono(fixture.path)
        if rate != ASR_RATE:
            samples = resample_poly(samples, ASR_RATE, rate)
        pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = normalise(decoder.hyp().hypstr if decoder.hyp() else "")
        ref = normalise(fixture.transcript)
        refs.append(ref)
        hyps.append(hyp)
        print(f"{fixture.id:<12} WER {jiwer.wer(ref, hyp) if hyp else 1.0:6.1%}  {hyp!r}")
    print(f"{'corpus':<12} WER {jiwer.wer(refs, hyps):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
