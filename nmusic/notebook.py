"""What the notebooks need besides display: run profile, Colab detection and set-up, audio players.

The first cell of every notebook calls :func:`setup`, which reads the ``NMUSIC_PROFILE``
environment variable: ``test`` (what nbval uses: the embedded dataset, seconds of training) or
``full`` (the default: the real thing). Every knob a notebook uses comes from the returned
:class:`Profile`, so the notebooks themselves hold no numbers that differ between the two.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    name: str
    synth_files_per_genre: int  # embedded dataset size
    synth_seconds: float
    clip_seconds: float  # manifest: shorter files are skipped
    judge_steps: int  # training steps of the genre judge (nmusic.judge)
    train_seconds: float  # time budget per training run in the notebooks
    n_generate: int  # clips generated per genre
    show_per_genre: int  # spectrograms / players shown per genre


PROFILES = {
    "test": Profile("test", synth_files_per_genre=3, synth_seconds=6.0, clip_seconds=2.0, judge_steps=30,
                    train_seconds=12.0, n_generate=2, show_per_genre=1),
    "full": Profile("full", synth_files_per_genre=12, synth_seconds=30.0, clip_seconds=2.0, judge_steps=200,
                    train_seconds=1800.0, n_generate=4, show_per_genre=2),
}


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def profile(name: str | None = None) -> Profile:
    name = name or os.environ.get("NMUSIC_PROFILE", "full")
    if name not in PROFILES:
        raise ConfigError(f"NMUSIC_PROFILE={name!r} is not a profile; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


def setup(work_dir: str | None = None) -> tuple[Profile, Path]:
    """Run ``colab_setup.sh`` when in Colab, pick the profile, make and return the work folder.

    The work folder defaults to ``/content/nmusic_work`` in Colab (local disk: fast), else
    ``nmusic_work`` next to the notebooks (under ``.test`` for the test profile).
    """
    prof = profile()
    if in_colab():
        subprocess.run(["bash", str(REPO_ROOT / "colab_setup.sh")], check=True)
    if work_dir is None:
        base = Path("/content") if in_colab() else REPO_ROOT / "notebooks"
        work_dir = base / ("nmusic_work" + (".test" if prof.name == "test" else ""))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    return prof, work


def with_overrides(prof: Profile, **kw) -> Profile:
    return replace(prof, **kw)


def audio_player(wave, sample_rate: int):
    """An IPython audio widget for a ``(T,)`` waveform (normalised only if it would clip)."""
    from IPython.display import Audio
    import torch

    wave = torch.as_tensor(wave).detach().float().cpu().reshape(-1)
    return Audio(wave.numpy(), rate=sample_rate, normalize=bool(wave.abs().max() > 1))


def pick_per_genre(labels, n_genres: int, k: int) -> list[int]:
    """Indices of the first ``k`` items of each genre in ``labels`` (genre order, then position)."""
    labels = [int(x) for x in labels]
    return [i for g in range(n_genres) for i in [j for j, y in enumerate(labels) if y == g][:k]]


def ensure_cache(work: Path, prof: Profile, sample_rate: int) -> Path:
    """The RAM cache notebook 01 wrote into ``work`` (if its sample rate fits), else the embedded dataset's."""
    from .dataset import AudioCache

    path = Path(work) / "cache.pt"
    if path.is_file() and AudioCache.load(path).sample_rate == sample_rate:
        return path
    from .audio import SpecParams
    from .demo import DemoBudget, prepare_embedded

    budget = DemoBudget(prof.synth_files_per_genre, prof.synth_seconds, prof.train_seconds, prof.judge_steps,
                        prof.n_generate, prof.n_generate)
    spec = SpecParams(sample_rate=sample_rate)
    return prepare_embedded(Path(work) / f"embedded-{sample_rate}", budget, spec)[2]


class LivePlot:
    """Trainer callback that redraws the training-loss curves in the notebook's output cell."""

    def __init__(self, every: int = 1, keys: list[str] | None = None):
        self.every, self.keys, self.history, self._handle = every, keys, [], None

    def on_log(self, step: int, metrics: dict) -> None:
        self.history.append(dict(metrics))
        if len(self.history) % self.every == 0:
            self.draw()

    def draw(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        from . import plots
        train = [h for h in self.history if h.get("split", "train") == "train"]
        fig = plots.loss_curves(train, keys=self.keys)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        return fig
