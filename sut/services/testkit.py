"""Helpers for testing the services (and for running the model engines without the fixture set).

* ``write_sample_manifest``: a small corpus from Debian's pocketsphinx-testdata (recorded English,
  with transcripts; Spanish references written by hand), in the fixture-manifest format.
* ``opus_round_trip``: what the gateway's media path does to a clip (48 kHz Opus encode + decode).
* ``ServiceProcess``: start a service as a subprocess on a free port and wait until it listens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from sut.config import REPO_ROOT
from sut.services.audio import resample, to_int16
from sut.services.envelope import HOP, RATE, band_envelope, speech_span

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
_LIBRIVOX = "librivox/sense_and_sensibility_01_austen_64kb-{}.wav"

# id → (file under TESTDATA, transcript, Spanish reference)
SAMPLE_CLIPS: dict[str, tuple[str, str, str]] = {
    "cards-001": ("cards/001.wav", "ten of clubs", "diez de tréboles"),
    "cards-002": ("cards/002.wav", "four queen of clubs", "cuatro reina de tréboles"),
    "cards-003": ("cards/003.wav", "seven of clubs", "siete de tréboles"),
    "cards-004": ("cards/004.wav", "five five", "cinco cinco"),
    "cards-005": ("cards/005.wav", "eight of spades four of clubs seven of hearts",
                  "ocho de picas cuatro de tréboles siete de corazones"),
    "austen-0870": (_LIBRIVOX.format("0870"),
                    "and mister john dashwood had then leisure to consider how much there might be "
                    "prudently in his power to do for them",
                    "y el señor John Dashwood tuvo entonces tiempo para considerar cuánto podría estar "
                    "prudentemente en su poder hacer por ellas"),
    "austen-0880": (_LIBRIVOX.format("0880"), "he was not an ill disposed young man",
                    "no era un joven mal dispuesto"),
    "austen-0890": (_LIBRIVOX.format("0890"),
                    "unless to be rather cold hearted and rather selfish is to be ill disposed",
                    "a menos que ser bastante frío de corazón y bastante egoísta sea estar mal dispuesto"),
    "austen-0920": (_LIBRIVOX.format("0920"),
                    "had he married a more a amiable woman he might have been made still more "
                    "respectable than he was",
                    "si se hubiera casado con una mujer más amable, podría haber llegado a ser aún más "
                    "respetable de lo que era"),
    "austen-0930": (_LIBRIVOX.format("0930"), "he might even have been made amiable himself",
                    "incluso él mismo podría haberse vuelto amable"),
}


def write_sample_manifest(directory: Path) -> Path:
    """Write manifest.json (files referenced by absolute path) for the pocketsphinx-testdata clips."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for clip_id, (rel, transcript, spanish) in SAMPLE_CLIPS.items():
        path = TESTDATA / rel
        samples, rate = sf.read(path, dtype="int16")
        start, end = speech_span(band_envelope(samples, rate))
        entries.append({
            "id": clip_id, "file": str(path), "language": "en", "transcript": transcript,
            "translations": {"es": spanish}, "duration_s": len(samples) / rate,
            "speech_start_s": start * HOP / RATE, "speech_end_s": end * HOP / RATE, "sample_rate": rate,
        })
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps(entries, indent=1, ensure_ascii=False))
    return manifest


def opus_round_trip(samples: np.ndarray, rate: int, bitrate: int = 32000) -> np.ndarray:
    """int16 mono at ``rate`` → int16 mono at 48 kHz after a libopus encode/decode (20 ms frames)."""
    pcm = to_int16(resample(samples, rate, 48000))
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % 960, np.int16)])
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "s16", bitrate
    enc.open()
    packets = []
    for i in range(0, len(pcm), 960):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate, dec.layout = 48000, "mono"
    out = [f.to_ndarray().reshape(-1) for p in packets for f in dec.decode(p)]
    decoded = np.concatenate(out)
    if decoded.dtype != np.int16:  # the native decoder hands out float planes
        decoded = to_int16(decoded * 32768.0)
    return decoded


@dataclass
class ServiceProcess:
    """``python -m sut.services.<name> <args> --port 0``; learns the port from its log line.

    ``args`` is the config source: ``["--config", path]`` or ``["--stack-json", path]``, plus extras.
    """

    name: str
    args: list[str]
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    lines: list[str] = field(default_factory=list)

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        cmd = [sys.executable, "-m", f"sut.services.{self.name}", *self.args, "--port", "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        ready = threading.Event()

        def pump() -> None:  # keep draining stdout so the service never blocks on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"listening on http://[^:]+:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout_s) or not self.port:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait; returns the exit code (SIGKILL only if it would not stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def wait_for_line(self, pattern: str, timeout_s: float = 5.0) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        return None


def write_stack_toml(directory: Path, body: str) -> Path:
    """A temporary stack config (e.g. one service with workers = 1 and a constant latency)."""
    path = directory / "stack.toml"
    path.write_text(body)
    return path
