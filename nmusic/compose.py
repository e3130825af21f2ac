"""What to generate beyond "n clips of a genre": a length, a continuation of your own audio, a genre
blend, variations (``nmusic generate --seconds/--prime/--genre a:w,b:w/--truncation``, the widgets).

* **Length** (:func:`frames_for_seconds`, :func:`check_length`): seconds -> spectrogram frames of
  the run's front end. MelNet samples any number of frames, tier by tier; a ``time_latent``
  cMelGAN makes any multiple of its latent hop (``prod(upsample_factors)`` frames) from its
  training clip's length up, and a request in between is rounded up to the next one and trimmed.
* **Continuation** (:func:`load_prime`): an audio file in any format :mod:`nmusic.data.decode`
  reads, resampled and analysed by the run's one front end (:class:`~nmusic.frontend.MelFrontEnd`);
  MelNet's output starts with it and carries on.
* **Blends** (:func:`parse_genre`): ``"edm:0.7,lofi:0.3"`` -> weights over the run's genres; the
  cMelGAN generator mixes its genre embeddings with them.
* **Variations**: the seed (every clip of one request comes from one seeded generator), cMelGAN's
  truncation (a truncated normal latent: ``|z| <= t``) and temperature, MelNet's temperature.

Every request a model cannot do is a :class:`GenerationError` naming the argument.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from .errors import DecodeError, NmusicError
from .frontend import MelFrontEnd, SpecParams

#: The shortest prime, in frames (0.25 s at the default front end): every MelNet tier gets some of it.
MIN_PRIME_FRAMES = 16
#: The longest request, in seconds (a guard against a typo such as 3000 for 30).
MAX_SECONDS = 600.0


class GenerationError(NmusicError):
    """A generation request (length, prime, genre blend, variation) this run cannot make."""


# --- length -------------------------------------------------------------------------------------------
def frames_for_seconds(spec: SpecParams, seconds: float) -> int:
    """The fewest frames whose audio lasts at least ``seconds`` (``spec.seconds(frames) >= seconds``)."""
    return max(2, math.ceil(seconds * spec.sample_rate / spec.hop_length - 1e-9) + 1)


def check_length(recipe, seconds: float | None, argument: str = "--seconds") -> int | None:
    """``seconds`` -> frames for ``recipe``, or None for the model's own clip length;
    :class:`GenerationError` naming ``argument`` when the model cannot make that length."""
    if seconds is None:
        return None
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise GenerationError(f"{argument} must be a positive number of seconds (got {seconds!r})")
    if seconds > MAX_SECONDS:
        raise GenerationError(f"{argument} {seconds:g}: at most {MAX_SECONDS:g} s per clip; make several clips instead")
    n_frames = frames_for_seconds(recipe.spec, seconds)
    frames_valid = getattr(recipe, "frames_valid", None)
    if frames_valid is not None:                         # cMelGAN: rounded up, or not possible at all
        try:
            frames_valid(n_frames)
        except NmusicError as e:
            raise GenerationError(f"{argument} {seconds:g}: {e}") from None
    return n_frames


# --- genre blends ---------------------------------------------------------------------------------------
def parse_genre(text: str, genres: list[str], argument: str = "--genre") -> int | torch.Tensor:
    """``"lofi"`` -> its id; ``"edm:0.7,lofi:0.3"`` -> weights ``(n_genres,)`` summing to 1 (a blend).

    Weights are non-negative numbers (any scale: ``edm:7,lofi:3`` is the same blend); a genre named
    twice adds up. :class:`GenerationError` naming ``argument`` for anything else."""
    text = (text or "").strip()
    if ":" not in text and "," not in text:
        if text not in genres:
            raise GenerationError(f"{argument} {text!r} is not a genre this model was trained on; choose one of "
                                  f"{genres} or a blend such as {genres[0]}:0.5,{genres[-1]}:0.5")
        return genres.index(text)
    weights = torch.zeros(len(genres), dtype=torch.float64)
    for part in text.split(","):
        m = re.fullmatch(r"\s*([^:\s]+)\s*:\s*([-+0-9.eE]+)\s*", part)
        if m is None:
            raise GenerationError(f"{argument} {text!r}: {part.strip()!r} is not GENRE:WEIGHT; write a blend as "
                                  f"{genres[0]}:0.7,{genres[-1]}:0.3")
        name, value = m.groups()
        if name not in genres:
            raise GenerationError(f"{argument} {text!r}: {name!r} is not a genre this model was trained on; "
                                  f"choose among {genres}")
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not math.isfinite(w) or w < 0:
            raise GenerationError(f"{argument} {text!r}: the weight of {name} must be a number >= 0 (got {value!r})")
        weights[genres.index(name)] += w
    if weights.sum() <= 0:
        raise GenerationError(f"{argument} {text!r}: the weights add up to 0; give at least one genre a weight > 0")
    return (weights / weights.sum()).float()


def genre_label(genre: int | torch.Tensor, genres: list[str]) -> str:
    """A file-name-safe label: ``lofi`` or ``edm70-lofi30``."""
    if isinstance(genre, int):
        return genres[genre]
    return "-".join(f"{g}{round(100 * float(w))}" for g, w in zip(genres, genre) if w > 0)


def blend_path(genres: list[str], start: str, end: str, steps: int) -> torch.Tensor:
    """``(steps, n_genres)`` weights from all ``start`` to all ``end`` in equal steps (notebook 04's plot)."""
    for name in (start, end):
        if name not in genres:
            raise GenerationError(f"blend from {start!r} to {end!r}: {name!r} is not one of {genres}")
    if steps < 2:
        raise GenerationError(f"a blend path needs at least 2 steps (got {steps})")
    t = torch.linspace(0, 1, steps)
    w = torch.zeros(steps, len(genres))
    w[:, genres.index(start)] += 1 - t
    w[:, genres.index(end)] += t
    return w


# --- continuation -----------------------------------------------------------------------------------------
def load_prime(path, front_end: MelFrontEnd, seconds: float | None = None, argument: str = "--prime") -> torch.Tensor:
    """The first ``seconds`` (default: all) of the audio file ``path`` as the run's normalised log-mel
    ``(1, n_mels, frames)``: decoded, downmixed, resampled to the run's rate and analysed by its front end."""
    from .data.decode import load_audio

    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"{argument} {path}: no such file; give an audio file to continue")
    if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
        raise GenerationError(f"{argument}-seconds must be a positive number of seconds (got {seconds!r})")
    spec = front_end.params
    try:
        wave, _ = load_audio(path, spec.sample_rate)
    except DecodeError as e:
        raise GenerationError(f"{argument}: {e}") from None
    if seconds is not None:
        wave = wave[: int(round(seconds * spec.sample_rate))]
    with torch.no_grad():
        mel = front_end(wave.to(front_end.filterbank.device)[None]).cpu()
    # A centred STFT's last frame half-reads padding: keep the frames the audio fills.
    mel = mel[..., : max(1, spec.frames(len(wave)) - 1)]
    if mel.shape[-1] < MIN_PRIME_FRAMES:
        raise GenerationError(f"{argument} {path}: {len(wave) / spec.sample_rate:.2f} s of audio is too short to "
                              f"continue; give at least {spec.seconds(MIN_PRIME_FRAMES + 1):.2f} s")
    return mel


# --- one request -------------------------------------------------------------------------------------------
def sample_request(recipe, genre: int | torch.Tensor, n: int, seed: int = 0, seconds: float | None = None,
                   temperature: float = 1.0, truncation: float | None = None,
                   prime: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` normalised log-mels ``(n, n_mels, frames)`` on the CPU, reproducible by ``seed``.

    ``genre``: an id or blend weights (:func:`parse_genre`); ``seconds``: the whole clip's length
    (default: the model's clip, or with a prime the prime plus one clip); ``prime``: a log-mel
    ``(1, n_mels, P)`` (:func:`load_prime`) that the clip starts with (MelNet). ``truncation``
    (cMelGAN): the latent is a normal truncated to ``[-t, t]``."""
    from .generate import sample_mels

    melnet = recipe.name == "melnet"
    if n < 1:
        raise GenerationError(f"--n must be at least 1 (got {n})")
    if not math.isfinite(temperature) or temperature < 0:
        raise GenerationError(f"--temperature must be a number >= 0 (got {temperature})")
    if truncation is not None and melnet:
        raise GenerationError("--truncation is for cMelGAN (a truncated latent); MelNet's variations come from "
                              "--temperature and --seed")
    if truncation is not None and not (math.isfinite(truncation) and truncation > 0):
        raise GenerationError(f"--truncation must be a number > 0 (got {truncation}); 0.5-2 are typical")
    if prime is not None and not melnet:
        raise GenerationError(f"--prime: continuing audio needs an autoregressive model (MelNet); this run is "
                              f"{recipe.name}")
    blend = not isinstance(genre, int)
    if blend and melnet:
        raise GenerationError("--genre: blends of genres are for cMelGAN (it mixes its genre embeddings); give "
                              "MelNet one genre")
    n_frames = check_length(recipe, seconds)
    kwargs = {}
    if prime is not None:
        n_prime = prime.shape[-1]
        if n_frames is not None and n_frames <= n_prime:
            raise GenerationError(f"--seconds {seconds:g} is not longer than the {recipe.spec.seconds(n_prime):.2f} s "
                                  f"prime: ask for more seconds, or a shorter --prime-seconds")
        kwargs["prime"] = prime
    if n_frames is not None:
        kwargs["n_frames"] = n_frames
    if truncation is not None:
        kwargs["truncation"] = truncation
    if not blend:
        return sample_mels(recipe, [genre] * n, seed=seed, temperature=temperature, **kwargs)
    device = next(recipe.unwrap(recipe.modules["generator"]).parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    weights = genre.float()[None].expand(n, -1)
    return recipe.sample(weights, generator=g, temperature=temperature, **kwargs).float().cpu()
