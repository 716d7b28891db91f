"""Noisy fixtures: the SNR as asked, the noise where the speech is, seeded, encoded once per (clip, SNR)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from loadtest.adverse import add_locust_options, clip_for, conditions_from_options, locust_argv
from loadtest.conditions import ImpairmentConfig, NoiseConfig
from loadtest.fixtures import DEFAULT_MANIFEST, FRAME_SAMPLES, FixtureLibrary, load_pcm48k
from loadtest.noise import FRAME, active_power, generate, measured_snr_db, mix_at_snr

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def library() -> FixtureLibrary:
    return FixtureLibrary(DEFAULT_MANIFEST)


@pytest.mark.parametrize("kind", ["pink", "babble"])
@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0])
def test_mixed_at_the_asked_snr_over_the_speech_only(library: FixtureLibrary, kind: str, snr: float) -> None:
    fixture = library.fixture("cards-005")
    clean = load_pcm48k(fixture)
    noisy = mix_at_snr(clean, fixture.first_voiced, fixture.last_voiced, snr, kind, 0, fixture.id)
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    assert abs(measured_snr_db(clean, noisy, fixture.first_voiced, fixture.last_voiced) - snr) < 0.2
    # Outside the speech span the clip is untouched: the end of speech stays where it was.
    start, stop = fixture.first_voiced * FRAME, (fixture.last_voiced + 1) * FRAME
    assert np.array_equal(noisy[:start], clean[:start]) and np.array_equal(noisy[stop:], clean[stop:])


def test_noise_spectra_and_seeds() -> None:
    n = 48000 * 4
    pink = generate("pink", n, 0, "k")
    assert np.sqrt(np.mean(pink**2)) == pytest.approx(1.0, rel=1e-6)
    spectrum = np.abs(np.fft.rfft(pink)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / 48000)

    def band(lo: float, hi: float) -> float:
        return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())

    # Pink: equal power per octave (within 1.5 dB over 250-4000 Hz); nothing above 8 kHz.
    octaves = [band(f, 2 * f) for f in (250, 500, 1000, 2000)]
    assert max(octaves) / min(octaves) < 10 ** 0.15
    assert band(8100, 24000) < 1e-9 * spectrum.sum()
    assert np.array_equal(pink, generate("pink", n, 0, "k"))  # seeded
    assert not np.array_equal(pink, generate("pink", n, 1, "k"))
    babble = generate("babble", n, 0, "k")
    # Babble fluctuates like speech: its 50 ms power varies far more than pink noise's.
    def spread(x: np.ndarray) -> float:
        p = np.mean(x[: n // 2400 * 2400].reshape(-1, 2400) ** 2, axis=1)
        return float(np.std(10 * np.log10(p)))
    assert spread(babble) > 2 * spread(pink)
    with pytest.raises(ValueError, match="unknown noise kind"):
        generate("white", 10, 0, "k")


def test_encoded_once_per_clip_and_snr(library: FixtureLibrary) -> None:
    clean = library.get("cards-001")
    noisy = library.get("cards-001", 5.0)
    assert noisy is library.get("cards-001", 5.0)  # cached, shared
    assert library.get("cards-001", 10.0) is not noisy
    assert clean is library.get("cards-001") and clean.snr_db is None and noisy.snr_db == 5.0
    # Same packet grid, same last voiced packet: the end of speech is timed as on the clean clip.
    assert len(noisy.packets) == len(clean.packets) and noisy.last_voiced == clean.last_voiced
    assert noisy.packets != clean.packets
    fixture = library.fixture("cards-001")
    pcm = load_pcm48k(fixture)
    assert active_power(pcm, fixture.first_voiced, fixture.last_voiced) > 0
    assert len(noisy.levels) == len(noisy.packets) and FRAME == FRAME_SAMPLES
    noise = NoiseConfig((None, 5.0))
    assert clip_for(library, "cards-001", noise, 0) is clean
    assert clip_for(library, "cards-001", noise, 1) is noisy


def test_conditions_reach_the_locust_processes() -> None:
    impairment = ImpairmentConfig((("lossy-5", 1), ("none", 2)), "", 7)
    noise = NoiseConfig((None, 20.0), "babble", 3)
    parser = argparse.ArgumentParser()
    add_locust_options(parser)
    opts = parser.parse_args(locust_argv(impairment, noise))
    assert conditions_from_options(opts) == (impairment, noise)
    assert locust_argv(ImpairmentConfig(), NoiseConfig()) == []
    with pytest.raises(SystemExit, match="unknown impairment profile"):
        conditions_from_options(parser.parse_args(["--impairment", "nope"]))
