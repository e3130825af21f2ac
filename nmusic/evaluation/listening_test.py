"""Blind listening test and mean opinion score: the MOS column of the paper's Table 1 (section 5).

The paper planned opinion scores "in line with previous papers" and dropped them because the
output sounded like noise; its Griffin-Lim rows (0.9 and 1.4 out of 5) are the only MOS it gives.
Here a listener rates shuffled, unlabeled clips, real audio, its Griffin-Lim reconstruction (the
upper bound) and each model's samples, on the absolute category rating scale of ITU-T P.800
(1 bad, 2 poor, 3 fair, 4 good, 5 excellent). Every rating is appended to a CSV at once (a
disconnect loses nothing; several listeners may share one file), and :func:`summarise` gives the
mean per source with a 95 % confidence interval from Student's t distribution.

The t quantile: the standard library has no t distribution and scipy is not a dependency, so
:func:`t_quantile` inverts the t CDF numerically: the CDF is the integral of the t density
(``math.lgamma`` for its constant), computed with Simpson's rule on 4096 intervals, and the
quantile is found by bisection. It is exact to about 1e-6 for every degree of freedom >= 1
(checked against published tables in the tests), so no normal approximation is needed.

Loudness: a louder clip tends to be rated differently, and level gives sources away (generated
spectrograms are often quieter), so every clip is scaled to the same RMS level before it is
played (:func:`loudness_match`).

CSV columns: :data:`RATING_COLUMNS`.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

SCALE = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}
RATING_COLUMNS = ("test", "item", "source", "genre", "rating", "rater", "time")
TARGET_RMS = 0.1  # -20 dBFS


# --- the test -------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """One clip of a listening test. ``item`` is the only name the listener sees."""

    item: str
    source: str          # "real", "griffin-lim", or a run name
    genre: str
    wave: torch.Tensor   # (T,) float32, loudness-matched
    sample_rate: int


@dataclass
class BlindTest:
    test_id: str
    clips: list[Clip]

    def __len__(self) -> int:
        return len(self.clips)

    def key(self) -> dict[str, tuple[str, str]]:
        """``{item: (source, genre)}`` (what the listener must not see until the end)."""
        return {c.item: (c.source, c.genre) for c in self.clips}


def loudness_match(wave, target_rms: float = TARGET_RMS) -> torch.Tensor:
    """``(T,)`` waveform scaled to ``target_rms`` (peak kept below 0.99); silence is left silent."""
    w = torch.as_tensor(wave).detach().float().cpu().reshape(-1)
    rms = float(w.square().mean().sqrt()) if len(w) else 0.0
    if rms < 1e-6:
        return w.clone()
    w = w * (target_rms / rms)
    peak = float(w.abs().max())
    return w * (0.99 / peak) if peak > 0.99 else w


def make_blind_test(clips: list[dict], seed: int = 0, test_id: str | None = None) -> BlindTest:
    """Shuffle ``clips`` (dicts with ``source, genre, wave (T,), sample_rate``) into an unlabeled test.

    Items are named ``clip-01``, ``clip-02``, ... in the shuffled order, so a name tells nothing.
    ``test_id`` defaults to a hash of the seed and the clips (audio included): rebuilding the same
    test (same clips, same seed) gives the same id, so a listener can resume it; new audio (a model
    trained further) makes a new test.
    """
    if not clips:
        raise ConfigError("make_blind_test: no clips to rate")
    for i, c in enumerate(clips):
        missing = {"source", "genre", "wave", "sample_rate"} - set(c)
        if missing:
            raise ConfigError(f"make_blind_test: clip {i} lacks {sorted(missing)}")
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    width = max(2, len(str(len(clips))))
    shuffled = [Clip(f"clip-{k + 1:0{width}d}", str(clips[i]["source"]), str(clips[i]["genre"]),
                     loudness_match(clips[i]["wave"]), int(clips[i]["sample_rate"])) for k, i in enumerate(order)]
    if test_id is None:
        h = hashlib.sha1(str(seed).encode())
        for c in shuffled:
            h.update(f"|{c.item}:{c.source}:{c.genre}:{c.sample_rate}:".encode())
            h.update((c.wave * 32767).round().to(torch.int16).numpy().tobytes())
        test_id = "blind-" + h.hexdigest()[:8]
    return BlindTest(test_id, shuffled)


# --- ratings on disk ------------------------------------------------------------------------------------
def save_rating(csv_path, test: BlindTest | str, clip: Clip, rating: int, rater: str = "anonymous") -> dict:
    """Append one rating to ``csv_path`` (header written when the file is new); returns the row."""
    rating = _check_rating(rating, f"rating of {clip.item}")
    row = {"test": test if isinstance(test, str) else test.test_id, "item": clip.item, "source": clip.source,
           "genre": clip.genre, "rating": rating, "rater": rater.strip() or "anonymous",
           "time": datetime.datetime.now().isoformat(timespec="seconds")}
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=RATING_COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
    return row


def _check_rating(value, where: str) -> int:
    try:
        r = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a rating; use a whole number from 1 to 5") from None
    if r not in SCALE:
        raise ConfigError(f"{where}: rating {r} is outside the 1-5 scale")
    return r


def load_ratings(csv_path) -> list[dict]:
    """Rows of a ratings CSV (``rating`` as int); :class:`ConfigError` naming the file and line if malformed."""
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"{path}: no ratings file; run the blind listening test (notebook 04) first")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(RATING_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: not a ratings file (missing column(s) {sorted(missing)}); "
                              f"expected {', '.join(RATING_COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            row = {k: row[k] for k in RATING_COLUMNS}
            row["rating"] = _check_rating(row["rating"], f"{path}, line {line}")
            rows.append(row)
    return rows


def rated_items(rows: list[dict], test_id: str, rater: str) -> set[str]:
    """Items of ``test_id`` that ``rater`` has already rated (to resume an interrupted test)."""
    return {r["item"] for r in rows if r["test"] == test_id and r["rater"] == rater}


# --- statistics -----------------------------------------------------------------------------------------
def _t_cdf(x: float, df: float, intervals: int = 4096) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom, x >= 0 (Simpson's rule from 0)."""
    t = np.linspace(0.0, x, intervals + 1)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
    w = np.ones(intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return 0.5 + float((w * f).sum() * (x / intervals) / 3)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (numerical, see module doc)."""
    if not 0 < p < 1 or not df > 0:
        raise ConfigError(f"t_quantile: need 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean with a two-sided ``level`` confidence interval ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)``.

    ``{"n", "mean", "std", "half_width", "low", "high"}``; with one value the interval is undefined (NaN).
    """
    x = [float(v) for v in values]
    n = len(x)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "half_width": nan, "low": nan, "high": nan}
    mean = sum(x) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1)) if n > 1 else float("nan")
    half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": mean - half, "high": mean + half}


def summarise(rows: list[dict], by: str = "source", level: float = 0.95) -> list[dict]:
    """MOS per ``by`` value (``source`` or ``genre``), best first: ``[{by: .., "n", "mean", "low", "high", ...}]``."""
    groups: dict[str, list[int]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(int(r["rating"]))
    out = [{by: k, **mean_ci(v, level)} for k, v in groups.items()]
    return sorted(out, key=lambda s: (-s["mean"], s[by]))


def summary_markdown(summary: list[dict], by: str = "source") -> str:
    lines = [f"| {by} | ratings | MOS (/5) | 95% CI |", "| --- | ---: | ---: | --- |"]
    for s in summary:
        hw = s.get("half_width")
        ci = "-" if hw is None or math.isnan(hw) else f"{s['low']:.2f} - {s['high']:.2f}"
        lines.append(f"| {s[by]} | {s['n']} | {s['mean']:.2f} | {ci} |")
    return "\n".join(lines) + "\n"


def mos_by_source(csv_path, test_id: str | None = None) -> dict[str, dict]:
    """``{source: mean_ci(...)}`` from a ratings CSV, of one test or all ({} when the file does not exist)."""
    if not Path(csv_path).is_file():
        return {}
    rows = [r for r in load_ratings(csv_path) if test_id is None or r["test"] == test_id]
    return {s["source"]: s for s in summarise(rows)}
