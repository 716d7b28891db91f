"""Which fixture is this audio? Energy-envelope matching for the model STT engine.

The model STT engine must derive its answer from the audio it received, so a broken media path shows
as a wrong or empty transcript. What arrives is a fixture after Opus coding at 48 kHz and the gateway's
VAD cut: same speech, different level, a different noise floor, up to ~0.5 s of extra silence and a
small offset. A coarse spectro-temporal fingerprint survives all of that: log energy in a few
frequency bands every 10 ms. Four bands rather than one broadband envelope because broadband
envelopes of different short utterances correlate too well (measured: up to 0.83 between two card
names vs 0.97+ for a true match; with four bands impostors stay below ~0.72).

Score = normalised cross-correlation (Pearson, over all band×frame cells) of the fixture's
speech-span envelope against the received envelope, maximised over lag. A match also needs the
received speech duration to be compatible with the fixture's.

Several fixtures in one clip (a VAD whose hangover outlasted the pauses of a monologue):
``match_parts`` splits the clip at its pauses and matches each voiced part on its own. A pause is a run
of at least ``MIN_PAUSE_FRAMES`` (0.3 s) frames quieter than speech (``speech_span``'s rule). 0.3 s
because the fixtures' own pauses are shorter: the manifest's ``max_internal_pause_s`` is at most 0.18 s
at -45 dBFS, and by this relative rule after Opus at most 0.20 s; the pauses between sentences of a
monologue are 0.45 s and more plus the clips' edge silence. A part that matches nothing alone is tried
together with the next one or two (a fixture cut at a pause that came out longer, e.g. in a quieter
clip next to a louder one, whose pauses fall further below the shared threshold). ``match`` flags a
match that leaves a part wholly outside the matched fixture (``uncovered``): a long fixture passes the
duration check with a short sentence beside it, so such a match may be hiding a second sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import correlate

from sut.services.audio import resample

RATE = 16000
HOP = 160  # 10 ms
WIN = 320  # 20 ms Hann window, 50 % overlap
BAND_EDGES_HZ = (100.0, 400.0, 1000.0, 2500.0, 7000.0)  # 4 bands; 7 kHz stays inside wideband Opus
FLOOR_DB = 45.0  # below peak: makes silence look the same whatever the codec did to the noise floor
SPEECH_DB = 35.0  # below peak: frames louder than this count as speech for the duration check
DEFAULT_THRESHOLD = 0.88
EDGE_FRAMES = 20  # the VAD may clip up to 200 ms of a fixture's speech at either end
MIN_PEAK_DBFS = -55.0  # loudest 10 ms below this: silence (the gateway's VAD triggers at -50 dBFS)
MIN_PAUSE_FRAMES = 30  # 0.3 s of non-speech splits a clip into parts (module docstring: why 0.3 s)
PART_MARGIN_FRAMES = 25  # silence kept around a part, like a VAD's pre-roll and hangover
MAX_GROUP = 3  # consecutive parts tried together when fewer match nothing


def band_envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """(frames, bands) log band energies in dB, floored at each band's peak − FLOOR_DB."""
    y = resample(x, rate, RATE)
    n = max(0, (len(y) - WIN) // HOP + 1)
    if n == 0:
        return np.zeros((0, len(BAND_EDGES_HZ) - 1))
    frames = sliding_window_view(y, WIN)[::HOP][:n] * np.hanning(WIN)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bins = np.fft.rfftfreq(WIN, 1.0 / RATE)
    bands = [power[:, (bins >= lo) & (bins < hi)].sum(axis=1)
             for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)]
    env = 10.0 * np.log10(np.stack(bands, axis=1) + 1e-6)
    peak = np.percentile(env, 99, axis=0)  # percentile, not max: one click must not set the floor
    return np.maximum(env, peak - FLOOR_DB)


def loud_frames(env: np.ndarray) -> np.ndarray:
    """Indices of the frames whose total energy is within SPEECH_DB of the loudest frame."""
    total = 10.0 * np.log10(np.sum(10.0 ** (env / 10.0), axis=1))
    return np.nonzero(total > np.percentile(total, 99) - SPEECH_DB)[0]


def speech_span(env: np.ndarray) -> tuple[int, int]:
    """First and one-past-last frame whose total energy is within SPEECH_DB of the loudest frame."""
    if len(env) == 0:
        return 0, 0
    loud = loud_frames(env)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)


def voiced_parts(env: np.ndarray, min_pause: int = MIN_PAUSE_FRAMES) -> list[tuple[int, int]]:
    """(first, one-past-last) frame of each stretch of speech, stretches parted by ``min_pause`` or more
    frames that are not speech (speech_span's rule, over the whole clip)."""
    return parts_of(loud_frames(env), min_pause) if len(env) else []


def parts_of(loud: np.ndarray, min_pause: int = MIN_PAUSE_FRAMES) -> list[tuple[int, int]]:
    """voiced_parts from the clip's loud_frames."""
    if len(loud) == 0:
        return []
    breaks = np.nonzero(np.diff(loud) - 1 >= min_pause)[0]
    starts = [int(loud[0])] + [int(loud[b + 1]) for b in breaks]
    ends = [int(loud[b]) + 1 for b in breaks] + [int(loud[-1]) + 1]
    return list(zip(starts, ends, strict=True))


def peak_dbfs(x: np.ndarray, rate: int) -> float:
    """Level of the loudest 10 ms, dB re int16 full scale."""
    hop = max(1, rate // 100)
    n = len(x) // hop
    if n == 0:
        return -np.inf
    rms = np.sqrt(np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)).max()
    return float(20.0 * np.log10(rms / 32768.0 + 1e-12))


@dataclass(frozen=True)
class Reference:
    id: str
    env: np.ndarray  # fixture's speech-span envelope (frames, bands)
    speech_frames: int


@dataclass(frozen=True)
class MatchResult:
    matched: bool
    id: str | None  # best candidate, even when it did not pass (for logs)
    score: float
    offset_ms: float  # where the fixture's speech starts in the received audio
    reason: str  # why not matched, "" when matched
    # Matched, but a stretch of speech lies wholly outside the matched fixture: the fixture fit the
    # duration check with another sentence beside it (match_parts tells them apart).
    uncovered: bool = False


def durations_compatible(received_frames: int, fixture_frames: int) -> bool:
    # Generous: the VAD may trim a soft onset or add its hangover; the codec may lift or sink quiet tails.
    return 0.75 * fixture_frames - 10 <= received_frames <= 1.3 * fixture_frames + 25


def ncc_over_lags(ref: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``ref`` with every full-overlap window of ``rec`` (both (frames, bands))."""
    lf = len(ref)
    nl = len(rec) - lf + 1
    if lf == 0 or nl <= 0:
        return np.zeros(0)
    cells = ref.size
    rz = ref - ref.mean()
    num = sum(correlate(rec[:, b], rz[:, b], mode="valid") for b in range(ref.shape[1]))
    # Window sums of rec and rec² via cumulative sums: O(frames) instead of O(frames × lags).
    c1 = np.concatenate([[0.0], np.cumsum(rec.sum(axis=1))])
    c2 = np.concatenate([[0.0], np.cumsum((rec**2).sum(axis=1))])
    s1 = c1[lf:] - c1[:-lf]
    s2 = c2[lf:] - c2[:-lf]
    var = np.maximum(s2 - s1 * s1 / cells, 0.0)
    den = np.sqrt(var * float((rz**2).sum()))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(den > 1e-9, num / den, 0.0)
    return score


class EnvelopeMatcher:
    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.references: list[Reference] = []

    def add(self, ref_id: str, samples: np.ndarray, rate: int,
            speech_start_s: float | None = None, speech_end_s: float | None = None) -> Reference:
        env = band_envelope(samples, rate)
        # The manifest's speech span if it has one (the tester times speech with it), else our own.
        start, end = speech_span(env)
        if speech_start_s is not None:
            start = max(0, int(round(speech_start_s * 1000 / 10)))
        if speech_end_s is not None:
            end = min(len(env), int(round(speech_end_s * 1000 / 10)))
        span_env = env[start:end]
        s0, s1 = speech_span(span_env)
        ref = Reference(ref_id, span_env, s1 - s0)
        self.references.append(ref)
        return ref

    def match(self, samples: np.ndarray, rate: int, candidates: set[str] | None = None) -> MatchResult:
        env = band_envelope(samples, rate)
        loud = loud_frames(env) if len(env) else np.zeros(0, dtype=np.intp)
        s0, s1 = (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)  # speech_span(env)
        if s1 - s0 < 10 or peak_dbfs(samples, rate) < MIN_PEAK_DBFS:
            return MatchResult(False, None, 0.0, 0.0, "no speech in audio")
        # Pad with the floor: audio the VAD clipped off the ends looks like silence.
        floor = env.min(axis=0)
        padded = np.concatenate([np.tile(floor, (EDGE_FRAMES, 1)), env, np.tile(floor, (EDGE_FRAMES, 1))])
        best: tuple[float, Reference | None, int] = (-1.0, None, 0)
        for ref in self.references:
            if candidates is not None and ref.id not in candidates:
                continue
            # Duration first: it is free, and it rules out most of a large corpus before any correlation.
            if not durations_compatible(s1 - s0, ref.speech_frames):
                continue
            scores = ncc_over_lags(ref.env, padded)
            if scores.size == 0:
                continue
            lag = int(np.argmax(scores))
            if scores[lag] > best[0]:
                best = (float(scores[lag]), ref, lag - EDGE_FRAMES)
        score, ref, lag = best
        if ref is None:
            reason = f"no fixture lasts like this audio ({(s1 - s0) / 100:.2f} s of speech)"
            return MatchResult(False, None, 0.0, 0.0, reason)
        if score < self.threshold:
            return MatchResult(False, ref.id, score, lag * 10.0, f"best score {score:.2f} < {self.threshold}")
        uncovered = any(b <= lag or a >= lag + len(ref.env) for a, b in parts_of(loud))
        return MatchResult(True, ref.id, score, lag * 10.0, "", uncovered)

    def match_parts(self, samples: np.ndarray, rate: int,
                    candidates: set[str] | None = None) -> list[MatchResult]:
        """The fixtures found, in order, in audio that holds several with pauses between them (module
        docstring); each result's offset_ms counts from the start of ``samples``. Empty when the audio
        has no pause to split at (``match`` has said all there is) or no part matches. Parts that match
        nothing are skipped."""
        spans = voiced_parts(band_envelope(samples, rate))
        if len(spans) < 2:
            return []
        per_frame = rate / 100.0  # samples per 10 ms frame at the received rate

        def bounds(i: int, j: int) -> tuple[int, int]:
            # Spans i..j with a margin, never reaching past the middle of the pause to a neighbour.
            lo = spans[i][0] - PART_MARGIN_FRAMES
            if i > 0:
                lo = max(lo, (spans[i - 1][1] + spans[i][0]) // 2)
            hi = spans[j][1] + PART_MARGIN_FRAMES
            if j + 1 < len(spans):
                hi = min(hi, (spans[j][1] + spans[j + 1][0]) // 2)
            return max(0, lo), hi

        found: list[MatchResult] = []
        i = 0
        while i < len(spans):  # bounded: i grows by at least one per pass
            nxt = i + 1  # nothing matched: skip this part
            for j in range(i, min(i + MAX_GROUP, len(spans))):
                lo, hi = bounds(i, j)
                part = samples[int(round(lo * per_frame)) : int(round(hi * per_frame))]
                res = self.match(part, rate, candidates)
                if res.matched:
                    found.append(replace(res, offset_ms=res.offset_ms + lo * 10.0))
                    nxt = j + 1
                    break
            i = nxt
        return found
