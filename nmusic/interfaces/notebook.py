"""What the notebooks need besides display: run profile, Colab set-up, the work folder, the data.

The first cell of every notebook finds (in Colab: clones) the code and calls :func:`setup`, which
reads the ``NMUSIC_PROFILE`` environment variable: ``test`` (what nbval uses: the embedded
dataset, seconds of training) or ``full`` (the default: the real thing). Every knob a notebook
uses comes from the returned :class:`Profile`, so the notebooks themselves hold no numbers that
differ between the two.

Where things are kept: the work folder (runs, the audio cache and its manifest, evaluations,
listening-test ratings) is on Google Drive in Colab (:data:`COLAB_DRIVE_WORK`, mounted on first
use), so a disconnect, which wipes the runtime's disk, loses at most the steps since the last
checkpoint; the notebooks' ``WORK_DIR`` setting moves it. Bulky files that can be made again
(extracted archives, the embedded dataset's audio) go to :func:`scratch_dir`, the runtime's fast
local disk in Colab.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ConfigError, NmusicError

REPO_ROOT = Path(__file__).resolve().parents[2]
COLAB_DRIVE = Path("/content/drive")
COLAB_DRIVE_WORK = COLAB_DRIVE / "MyDrive" / "nmusic"     # the work folder in Colab, on Google Drive
COLAB_SCRATCH = Path("/content/nmusic_scratch")           # the runtime's local disk: fast, lost on disconnect


@dataclass(frozen=True)
class Profile:
    name: str
    synth_files_per_genre: int  # embedded dataset size
    synth_seconds: float
    clip_seconds: float  # manifest: shorter files are skipped (nmusic.data.manifest.CLIP_SECONDS)
    judge_steps: int  # training steps of the genre judge (nmusic.evaluation.judge)
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


def setup(work_dir=None, version: str | None = None) -> tuple[Profile, Path]:
    """Check the code's version, run ``colab_setup.sh`` in Colab, pick the profile, make the work folder.

    ``work_dir`` (the notebooks' ``WORK_DIR``): ``None`` is Google Drive in Colab
    (:data:`COLAB_DRIVE_WORK`, Drive mounted when it is not yet), else ``nmusic_work`` next to the
    notebooks (``.test`` added for the test profile). ``version``: the nmusic version the notebook
    was written for; another version of the code is an error that says what to do.
    """
    if version is not None and version != __version__:
        raise ConfigError(f"this notebook is for nmusic {version} but {REPO_ROOT} holds nmusic {__version__}; "
                          f"delete that folder (in Colab: `!rm -rf {REPO_ROOT}`) and run the first cell again, "
                          f"or open the notebook of version {__version__}")
    prof = profile()
    colab = in_colab()
    if colab:
        subprocess.run(["bash", str(REPO_ROOT / "colab_setup.sh")], check=True)
    suffix = ".test" if prof.name == "test" else ""
    if work_dir is None:
        work_dir = COLAB_DRIVE_WORK.with_name(COLAB_DRIVE_WORK.name + suffix) if colab else \
            REPO_ROOT / "notebooks" / f"nmusic_work{suffix}"
    work = Path(work_dir)
    if colab and _under(work, COLAB_DRIVE):
        mount_drive()
    work.mkdir(parents=True, exist_ok=True)
    where = "Google Drive" if _under(work, COLAB_DRIVE) else ("the runtime's disk (lost on disconnect)" if colab else "")
    print(f"nmusic {__version__}, {prof.name} profile; work folder {work}{f' on {where}' if where else ''}")
    return prof, work


def _under(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def mount_drive() -> None:
    """Mount Google Drive at ``/content/drive`` (Colab asks for permission once per runtime)."""
    if (COLAB_DRIVE / "MyDrive").is_dir():
        return
    try:
        from google.colab import drive
    except ImportError:
        raise ConfigError(f"the work folder is on Google Drive ({COLAB_DRIVE}) but Drive cannot be mounted here "
                          f"(no google.colab); set WORK_DIR in the first cell to a local folder") from None
    drive.mount(str(COLAB_DRIVE))


def scratch_dir(work: Path) -> Path:
    """Where bulky files that can be made again go: the runtime's local disk in Colab, else ``work``."""
    if in_colab() and _under(work, COLAB_DRIVE):
        COLAB_SCRATCH.mkdir(parents=True, exist_ok=True)
        return COLAB_SCRATCH
    return Path(work)


def audio_player(wave, sample_rate: int):
    """An IPython audio widget for a ``(T,)`` waveform (normalised only if it would clip)."""
    import torch
    from IPython.display import Audio

    wave = torch.as_tensor(wave).detach().float().cpu().reshape(-1)
    return Audio(wave.numpy(), rate=sample_rate, normalize=bool(wave.abs().max() > 1))


def pick_per_genre(labels, n_genres: int, k: int) -> list[int]:
    """Indices of the first ``k`` items of each genre in ``labels`` (genre order, then position)."""
    labels = [int(x) for x in labels]
    return [i for g in range(n_genres) for i in [j for j, y in enumerate(labels) if y == g][:k]]


def _cache_info(path: Path) -> dict | None:
    """Sample rate, genres, files and hours of the audio cache at ``path`` (memory-mapped: nothing of its
    audio is read); ``None`` when it is missing or unusable (``AudioCache.load`` says why on use)."""
    from ..data.cache import AudioCache
    try:
        cache = AudioCache.load(path)
    except NmusicError:
        return None
    return {"sample_rate": cache.sample_rate, "genres": list(cache.genres), "files": len(cache),
            "hours": float(cache.offsets[-1]) / cache.sample_rate / 3600}


def _cache_sample_rate(path: Path) -> int | None:
    info = _cache_info(path)
    return info["sample_rate"] if info else None


def ensure_cache(work: Path, prof: Profile, sample_rate: int) -> Path:
    """The audio cache to train on at ``sample_rate``, and a printed line saying which data it is.

    Your music, as notebook 01 left it in ``work``: its cache when it has this sample rate, else the
    same manifest prepared again at this rate (``cache-<rate>.pt``, kept for next time). The embedded
    procedural dataset only when notebook 01 was never run in ``work``, and then said so. Data is never
    swapped silently: a cache at another rate without its manifest, or a manifest whose audio files
    are gone, stops with what to do.
    """
    from ..data.cache import prepare
    from ..data.manifest import Manifest

    work = Path(work)
    cache, manifest_path = work / "cache.pt", work / "manifest.csv"
    for path in (cache, work / f"cache-{sample_rate}.pt"):
        if path.is_file() and _cache_sample_rate(path) == sample_rate:
            return _announce(path, "your data (notebook 01)")
    if manifest_path.is_file():
        manifest = Manifest.load(manifest_path)
        missing = [p for p in manifest.paths() if not p.is_file()]
        if missing:
            raise ConfigError(
                f"the model needs {sample_rate} Hz audio; {cache} has {_cache_sample_rate(cache) or 'no'} Hz and the "
                f"audio files listed in {manifest_path} are gone ({len(missing)} of {len(manifest.rows)}, e.g. "
                f"{missing[0]}; a Colab disconnect wipes the runtime's disk): run notebook 01 again with "
                f"SPEC_PRESET set for this model (its spectrogram preset), or pick a preset at "
                f"{_cache_sample_rate(cache)} Hz")
        out = work / f"cache-{sample_rate}.pt"
        print(f"preparing your data again at {sample_rate} Hz (the cache of notebook 01 is at "
              f"{_cache_sample_rate(cache)} Hz) into {out} ...")
        prepare(manifest, sample_rate, out)
        return _announce(out, "your data (notebook 01), prepared again at this rate")
    if cache.is_file():
        raise ConfigError(f"{cache} holds {_cache_sample_rate(cache)} Hz audio but the model needs {sample_rate} Hz, "
                          f"and there is no {manifest_path} to prepare it again from: run notebook 01 with "
                          f"SPEC_PRESET set for this model, or pick a preset at {_cache_sample_rate(cache)} Hz")
    from ..data.embedded import prepare_embedded

    path = prepare_embedded(scratch_dir(work) / f"embedded-{sample_rate}", prof.synth_files_per_genre,
                            prof.synth_seconds, sample_rate)[2]
    return _announce(path, f"the embedded procedural dataset: notebook 01 was not run with {work} as its work "
                           f"folder (run it to train on your music)")


def _announce(path: Path, what: str) -> Path:
    info = _cache_info(path)
    if info is None:
        from ..data.cache import AudioCache
        AudioCache.load(path)          # raises the error that says what is wrong with it
    print(f"training data: {what}: {path} ({info['hours']:.2f} h, {info['files']} files, genres {info['genres']}, "
          f"{info['sample_rate']} Hz)")
    return path


class LivePlot:
    """Trainer callback that redraws the losses in the notebook's output cell: the same panels as the
    run's ``loss.png`` (:func:`nmusic.plots.loss_curves`), every ``every`` log entries."""

    def __init__(self, every: int = 1):
        self.every, self.history, self._handle = every, [], None

    def on_log(self, step: int, metrics: dict) -> None:
        self.history.append(dict(metrics))
        if len(self.history) % self.every == 0:
            self.draw()

    def draw(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        from .. import plots
        fig = plots.loss_curves(self.history)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        return fig
