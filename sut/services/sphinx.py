"""pocketsphinx inside worker processes (the real STT engine).

pocketsphinx holds the GIL while decoding (measured: a 6 s clip stalled the event loop ~200 ms when
decoded in a thread), so decoding runs in a process pool of ``workers`` processes, each with one
Decoder created once by the initializer: one decoder per worker slot, and real parallelism.
"""

from __future__ import annotations

import signal
import time

import numpy as np

from sut.services.audio import resample, to_int16

SPHINX_RATE = 16000
_decoder = None  # one per worker process


def init_worker() -> None:
    # Ctrl-C reaches the whole process group; the parent service owns shutdown, not its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pocketsphinx import Decoder  # imported here: the parent service never needs the model

    global _decoder
    _decoder = Decoder(loglevel="FATAL")


def decode(pcm: bytes, rate: int) -> tuple[str, float]:
    """int16 mono PCM at ``rate`` → (hypothesis, decode seconds)."""
    assert _decoder is not None, "init_worker did not run"
    t0 = time.perf_counter()
    samples = np.frombuffer(pcm, dtype=np.int16)
    if rate != SPHINX_RATE:
        samples = to_int16(resample(samples, rate, SPHINX_RATE))
    _decoder.start_utt()
    # full_utt: the whole utterance is here, so cepstral mean normalisation can use all of it.
    _decoder.process_raw(samples.tobytes(), no_search=False, full_utt=True)
    _decoder.end_utt()
    hyp = _decoder.hyp()
    return (hyp.hypstr if hyp is not None else ""), time.perf_counter() - t0


def warm_up(seconds: float) -> bool:
    """Keeps a process busy briefly so concurrent warm-ups make the pool start every worker."""
    time.sleep(seconds)
    return _decoder is not None
