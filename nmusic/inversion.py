"""The one inversion choice: how a normalised log-mel becomes audio, for everything that makes audio.

An :class:`Inversion` maps spectrograms ``(N, n_mels, frames)`` to audio ``(N, samples)`` on the CPU. Two kinds:

- :class:`GriffinLim`: the front end's least-squares mel inverse + Griffin-Lim (``n_iter`` iterations,
  default the spectrogram's ``griffin_lim_iters``);
- :class:`Vocoded`: a trained vocoder run (:mod:`nmusic.models.vocoder`), chunked and batched, on its
  device (the GPU when there is one).

:func:`load_inversion` turns a user's choice into one: ``"griffin-lim"`` (or ``"griffin-lim-N"``), a vocoder
run folder / checkpoint, or ``None``: the vocoder recorded for the model run (``RUN/vocoder.json``, written
by :func:`record_vocoder` or ``nmusic generate --vocoder V --remember``), else Griffin-Lim. A vocoder whose
spectrogram parameters differ from the model's is refused, naming both.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import to_dict
from .device import resolve_device
from .errors import ConfigError
from .frontend import MelFrontEnd, SpecParams, spec_name
from .utils.files import atomic_write_json, read_json

GRIFFIN_LIM = "griffin-lim"
RECORD = "vocoder.json"     # in a model run folder: the vocoder its audio is made with


class Inversion:
    """Normalised log-mel -> audio. ``name`` labels it in tables and listening tests; ``spec`` is what it inverts."""

    name: str = "inversion"
    spec: SpecParams

    def __call__(self, mels: torch.Tensor, samples: int | None = None, batch: int = 32) -> torch.Tensor:
        raise NotImplementedError


class GriffinLim(Inversion):
    def __init__(self, front_end: MelFrontEnd, n_iter: int | None = None):
        self.front_end, self.spec = front_end, front_end.params
        self.n_iter = n_iter or self.spec.griffin_lim_iters
        self.name = f"{GRIFFIN_LIM}-{self.n_iter}"

    def __call__(self, mels, samples=None, batch=32):
        device = self.front_end.filterbank.device
        out = [self.front_end.invert(mels[i:i + batch].to(device), n_iter=self.n_iter, length=samples).cpu()
               for i in range(0, len(mels), batch)]
        return torch.cat(out) if out else torch.zeros(0, samples or 0)


class Vocoded(Inversion):
    def __init__(self, recipe, name: str = "vocoder"):
        self.recipe, self.spec, self.name = recipe, recipe.spec, name

    def __call__(self, mels, samples=None, batch=32):
        if len(mels) == 0:
            return torch.zeros(0, samples or 0)
        out = [self.recipe.vocode(mels[i:i + batch], length=samples, batch=batch).cpu()
               for i in range(0, len(mels), batch)]
        return torch.cat(out)


def _spec_text(spec: SpecParams) -> str:
    return f"'{spec_name(spec)}' ({spec.sample_rate} Hz, n_fft {spec.n_fft}, hop {spec.hop_length}, {spec.n_mels} mels)"


def check_same_spec(model_spec: SpecParams, vocoder_spec: SpecParams, model_label: str, vocoder_label: str) -> None:
    """:class:`ConfigError` naming both runs and the fields that differ when the vocoder cannot invert the model's mels."""
    if model_spec == vocoder_spec:
        return
    a, b = to_dict(model_spec), to_dict(vocoder_spec)
    fields = ", ".join(f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
    raise ConfigError(
        f"the vocoder {vocoder_label} inverts spectrograms {_spec_text(vocoder_spec)} but {model_label} makes "
        f"{_spec_text(model_spec)} ({fields}); train a vocoder on the model's spectrogram preset (e.g. "
        f"`nmusic train vocoder --preset tiny-{spec_name(model_spec)}`) or use --vocoder {GRIFFIN_LIM}")


def record_vocoder(run_dir, vocoder) -> Path:
    """Make ``vocoder`` (a run folder) the default inversion of the model run ``run_dir``; returns the record."""
    run_dir, vocoder = Path(run_dir), Path(vocoder)
    return atomic_write_json(run_dir / RECORD, {"vocoder": str(vocoder.resolve())})


def recorded_vocoder(run_dir) -> Path | None:
    """The vocoder recorded for the model run ``run_dir`` (:func:`record_vocoder`), or None."""
    if run_dir is None:
        return None
    path = Path(run_dir)
    record = (path if path.is_dir() else path.parent) / RECORD
    value = read_json(record).get("vocoder") if record.is_file() else None
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else record.parent / p


def split_vocoders(run_dirs) -> tuple[list[Path], list[Path]]:
    """``(model runs, vocoder runs)`` of ``run_dirs``, by the model each ``run.json`` names (order kept)."""
    models, vocoders = [], []
    for r in map(Path, run_dirs):
        (vocoders if read_json(r / "run.json").get("model") == "vocoder" else models).append(r)
    return models, vocoders


def load_inversion(choice, spec: SpecParams, device="auto", run_dir=None, model_label: str | None = None) -> Inversion:
    """The inversion for mels of spectrogram ``spec`` (a model run's, made by ``run_dir``).

    ``choice``: ``None`` (the run's recorded vocoder, else Griffin-Lim), ``"griffin-lim"`` / ``"griffin-lim-N"``
    (N iterations), an :class:`Inversion`, or a vocoder run folder or checkpoint file."""
    if isinstance(choice, Inversion):
        check_same_spec(spec, choice.spec, model_label or "the model", choice.name)
        return choice
    if choice is None:
        choice = recorded_vocoder(run_dir) or GRIFFIN_LIM
    text = str(choice)
    m = re.fullmatch(rf"{GRIFFIN_LIM}(?:-(\d+))?", text)
    if m:
        return GriffinLim(MelFrontEnd(spec).to(resolve_device(device)), int(m.group(1)) if m.group(1) else None)
    from .training.runs import load_run
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"--vocoder {text}: no such run folder or checkpoint; give a folder trained with "
                          f"`nmusic train vocoder` or '{GRIFFIN_LIM}'")
    recipe, _ = load_run(path, device=device)
    if recipe.name != "vocoder":
        raise ConfigError(f"--vocoder {text}: that run holds a {recipe.name!r} model, not a vocoder; give a folder "
                          f"trained with `nmusic train vocoder`")
    name = f"vocoder:{path.name if path.is_dir() else path.parent.name}"
    check_same_spec(spec, recipe.spec, model_label or (f"the model run {run_dir}" if run_dir else "the model"),
                    f"{path}")
    return Vocoded(recipe, name)

