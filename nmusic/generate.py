"""Generation and inversion: a trained run's spectrograms, turned into audio (``nmusic generate``).

sample (:func:`sample_mels`, :func:`sample_per_genre`) -> normalised log-mel ``(N, n_mels, frames)``
-> inversion to audio (:func:`invert`: Griffin-Lim with the run's own spectrogram parameters, or the
:class:`~nmusic.inversion.Inversion` given, e.g. a trained vocoder; the way listeners, the judges and the reports
all get it) -> WAVs and PNGs (:func:`write_clips`).

Works for any model family: the run's checkpoint carries the model name, preset, config, genre
list and spectrogram parameters, so nothing has to be re-specified.
"""
from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf
import torch

from . import plots
from .device import resolve_device
from .errors import NmusicError
from .frontend import MelFrontEnd
from .inversion import GriffinLim


def genre_id(genres: list[str], genre: str) -> int:
    if genre not in genres:
        raise NmusicError(f"genre {genre!r} is not one this model was trained on; choose one of {genres}")
    return genres.index(genre)


def sample_mels(recipe, genre_ids: list[int], seed: int = 0, temperature: float = 1.0, **kwargs) -> torch.Tensor:
    """``len(genre_ids)`` normalised log-mels ``(N, n_mels, frames)`` on the CPU, reproducible by ``seed``.

    ``kwargs`` go to ``recipe.sample`` (e.g. MelNet's ``n_frames``)."""
    device = next(recipe.unwrap(next(iter(recipe.modules.values()))).parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    genre = torch.tensor(genre_ids, dtype=torch.long)       # on the CPU: checked there, moved by the recipe
    return recipe.sample(genre, generator=g, temperature=temperature, **kwargs).float().cpu()


def sample_per_genre(recipe, n_per_genre: int, seed: int, n_frames: int | None = None,
                     temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_genre`` mels of every genre ``(G*n, n_mels, frames)`` and their genre ids; genre ``g`` is
    sampled with seed ``seed + 1000 * g``."""
    mels, labels = [], []
    extra = {} if n_frames is None else {"n_frames": n_frames}
    for g in range(len(recipe.genres)):
        mels.append(sample_mels(recipe, [g] * n_per_genre, seed=seed + 1000 * g, temperature=temperature, **extra))
        labels.append(torch.full((n_per_genre,), g, dtype=torch.long))
    return torch.cat(mels), torch.cat(labels)


def invert(mels: torch.Tensor, front_end: MelFrontEnd, samples: int | None = None, batch: int = 32,
           inversion=None) -> torch.Tensor:
    """Spectrograms ``(N, n_mels, frames)`` -> audio ``(N, samples)`` on the CPU, the way listeners get it
    (``inversion``, a :class:`nmusic.inversion.Inversion` such as a vocoder; default Griffin-Lim on the front
    end's device), ``batch`` clips at a time."""
    return (inversion or GriffinLim(front_end))(mels, samples, batch)


def write_clips(mels: torch.Tensor, front_end: MelFrontEnd, out_dir, names: list[str],
                titles: list[str] | None = None, inversion=None) -> list[dict]:
    """Invert each mel (``inversion``, default Griffin-Lim) and write ``NAME.wav`` + ``NAME.png``; returns
    file records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    waves = invert(mels, front_end, inversion=inversion)
    sr = front_end.params.sample_rate
    records = []
    for mel, wave, name, title in zip(mels, waves, names, titles or names):
        wav, png = out_dir / f"{name}.wav", out_dir / f"{name}.png"
        sf.write(wav, wave.numpy(), sr, subtype="PCM_16")
        plots.spectrogram(mel, title, path=png)
        records.append({"wav": str(wav), "png": str(png), "seconds": len(wave) / sr})
    return records


#: Seconds of music per clip of a note-based model when ``--seconds`` is not given.
NOTE_SECONDS = 10.0


def write_note_clips(recipe, genre_ids: list[int], out_dir, names: list[str], seconds: float, seed: int = 0,
                     temperature: float = 1.0, title: str = "") -> list[dict]:
    """A note-based model's clips (``recipe.sample_audio``: notes played by the synthesiser's instruments):
    ``NAME.mid`` (the notes), ``NAME.wav`` (as played) and ``NAME.png`` (piano-roll beside the log-mel)."""
    from .data.midi import write_score
    from .data.synth import PROGRAMS
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    audio, rolls, scores = recipe.sample_audio(torch.tensor(genre_ids), seconds, g, temperature)
    fe = MelFrontEnd(recipe.spec)
    records = []
    for i, (name, wave, score) in enumerate(zip(names, audio, scores)):
        genre = recipe.genres[genre_ids[i]]
        mid, wav, png = (out_dir / f"{name}.{ext}" for ext in ("mid", "wav", "png"))
        write_score({**score, "notes": [n for n in score["notes"] if n[2] >= 0]}, mid, PROGRAMS.get(genre))
        sf.write(wav, wave.numpy(), recipe.spec.sample_rate, subtype="PCM_16")
        plots.piano_roll_and_spectrogram(rolls[i], fe(wave[None])[0], title or name, recipe.config.pitch_low, path=png)
        records.append({"mid": str(mid), "wav": str(wav), "png": str(png), "seconds": len(wave) / recipe.spec.sample_rate})
    return records


def generate(run_dir, genre: str, n: int = 4, out_dir=None, seed: int = 0, temperature: float = 1.0,
             device: str = "auto", progress: bool = True, seconds: float | None = None, prime=None,
             prime_seconds: float | None = None, truncation: float | None = None, vocoder=None) -> list[Path]:
    """Write ``n`` clips of ``genre`` from the run in ``run_dir``; returns the WAV paths. A note-based run
    also writes each clip's ``.mid`` (:func:`write_note_clips`; ``seconds`` default 10).

    ``genre`` may be a blend (``"edm:0.7,lofi:0.3"``, cMelGAN); ``seconds`` the clip length,
    ``prime`` an audio file to continue (MelNet; its first ``prime_seconds``), ``truncation``
    cMelGAN's truncated latent: see :mod:`nmusic.compose`.
    ``vocoder``: how the mels become audio (:func:`nmusic.inversion.load_inversion`): a vocoder run folder,
    ``"griffin-lim"``, or None for the vocoder recorded for the run, else Griffin-Lim. The checkpoint is the
    one :func:`nmusic.training.runs.load_run` picks (the one ``nmusic evaluate`` and the notebooks use too);
    with ``progress`` it is named on stderr.
    """
    from .compose import genre_label, load_prime, parse_genre, sample_request
    from .inversion import load_inversion
    from .training.runs import describe_checkpoint, load_run

    if n < 1:
        raise NmusicError(f"--n must be at least 1 (got {n})")
    dev = resolve_device(device)
    recipe, ckpt = load_run(run_dir, device=dev)
    if progress:
        print(f"{run_dir}: {describe_checkpoint(ckpt)}", file=sys.stderr)
    if recipe.name == "vocoder":
        raise NmusicError(f"{run_dir} is a vocoder: it turns spectrograms into audio and generates none; give a "
                          f"model run and this one as --vocoder {run_dir}")
    if hasattr(recipe, "sample_audio"):   # a note-based model (MidiNet): .mid, .wav and the piano-roll
        gid = genre_id(recipe.genres, genre)
        out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "generated"
        recs = write_note_clips(recipe, [gid] * n, out_dir, [f"{recipe.name}_{genre}_{seed + i:03d}" for i in range(n)],
                                seconds or NOTE_SECONDS, seed, temperature,
                                f"{recipe.name} · {genre} · step {ckpt.get('step', '?')}")
        return [Path(r["wav"]) for r in recs]
    inversion = load_inversion(vocoder, recipe.spec, device=dev, run_dir=run_dir, model_label=f"the model run {run_dir}")
    if progress:
        print(f"inversion: {inversion.name}", file=sys.stderr)
    gid = parse_genre(genre, recipe.genres)
    front_end = MelFrontEnd(recipe.spec).to(dev)
    primed = None if prime is None else load_prime(prime, front_end, prime_seconds)
    mels = sample_request(recipe, gid, n, seed=seed, seconds=seconds, temperature=temperature,
                          truncation=truncation, prime=primed)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "generated"
    label = genre_label(gid, recipe.genres) + ("" if prime is None else f"_from-{Path(prime).stem}")
    names = [f"{recipe.name}_{label}_{seed + i:03d}" for i in range(n)]
    recs = write_clips(mels, front_end, out_dir, names,
                       [f"{recipe.name} · {genre} · step {ckpt.get('step', '?')}"] * n, inversion=inversion)
    return [Path(r["wav"]) for r in recs]
