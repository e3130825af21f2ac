"""Does music of any length stay in genre? Long clips judged window by window, continuations judged on
what the model added, blends judged along the way from one genre to another.

Everything is judged as audio, after the same inversion listeners get (:func:`nmusic.generate.invert`),
by the honest judge (:mod:`.judge`; undecided never counts as the genre asked for):

* :func:`window_accuracy`: clips cut into windows (2 s: the judge's training length); the share of
  windows at each position assigned the genre asked for. A long clip that drifts out of its genre,
  or whose edges alone sound right, shows up as falling accuracy along the clip.
* :func:`continuation_accuracy`: MelNet continues held-out real clips; only the continued part is
  judged, next to the real audio that followed the same primes (the ceiling, after the same round trip).
* :func:`blend_probabilities`: the judge's mean genre probabilities along a cMelGAN blend path.
* :func:`seam_profile`: mean frame-to-frame change by position within the latent hop; a generator
  that stitched or tiled its output would change more at its seams.
"""
from __future__ import annotations

import torch

from ..compose import blend_path, frames_for_seconds, sample_request
from ..generate import invert, sample_mels
from .judge import decide


def window_accuracy(judge, wave: torch.Tensor, rate: int, labels: torch.Tensor, window_s: float = 2.0) -> dict:
    """``wave (N, samples)``: accuracy per window position (``per_window``), over all windows (``all``),
    the undecided share, and per genre; a tail shorter than a window is left out."""
    w = int(round(window_s * rate))
    n_win = wave.shape[-1] // w
    if n_win < 1:
        raise ValueError(f"clips of {wave.shape[-1] / rate:.2f} s are shorter than one {window_s} s window")
    windows = wave[:, : n_win * w].reshape(len(wave) * n_win, w)
    pred = decide(judge.embed(windows, rate)[1]).view(len(wave), n_win)
    hit = (pred == labels[:, None]).float()
    genres = judge.genres
    return {
        "window_seconds": window_s, "clips": len(wave), "windows_per_clip": n_win,
        "per_window": hit.mean(0).tolist(), "all": float(hit.mean()),
        "undecided": float((pred < 0).float().mean()),
        "per_genre": {genres[g]: float(hit[labels == g].mean()) for g in labels.unique().tolist()},
    }


def long_clip_accuracy(recipe, judge, front_end, seconds: float, native_seconds: float, n_per_genre: int,
                       seed: int = 0, window_s: float = 2.0) -> dict:
    """Clips of ``seconds`` and of the native ``native_seconds`` from every genre (the same seeds), judged
    per ``window_s`` window; also their :func:`seam_profile`."""
    rate = recipe.spec.sample_rate
    out = {}
    for name, s in (("native", native_seconds), ("long", seconds)):
        mels, labels = [], []
        for g in range(len(recipe.genres)):
            mels.append(sample_request(recipe, g, n_per_genre, seed=seed + 1000 * g, seconds=s))
            labels.append(torch.full((n_per_genre,), g))
        mels, labels = torch.cat(mels), torch.cat(labels)
        wave = invert(mels, front_end)
        out[name] = {"seconds": s, "frames": mels.shape[-1], **window_accuracy(judge, wave, rate, labels, window_s)}
        hop = getattr(recipe.unwrap(recipe.modules.get("generator", torch.nn.Identity())), "hop", None)
        if hop:
            out[name]["seam_profile"] = seam_profile(mels, hop).tolist()
        frames = recipe.spec.frames(int(round(window_s * rate))) - 1
        if mels.shape[-1] >= 2 * frames:
            out[name]["window_repetition"] = window_repetition(mels, labels, frames)
    return out


def window_repetition(mels: torch.Tensor, labels: torch.Tensor, frames: int) -> float:
    """How much a long clip repeats itself: the mean L1 distance between consecutive windows of
    ``frames`` of one clip, over that between the same windows of other clips of the same genre.
    About 1: its windows differ as much as different clips do; near 0: a loop."""
    n = mels.shape[-1] // frames
    w = mels[..., : n * frames].unflatten(-1, (n, frames))                  # (N, F, n, frames)
    within = (w[:, :, 1:] - w[:, :, :-1]).abs().mean()
    across = []
    for g in labels.unique():
        idx = torch.nonzero(labels == g)[:, 0]
        if len(idx) > 1:
            a = w[idx]
            across.append((a[:, :, 1:] - a.roll(1, dims=0)[:, :, :-1]).abs().mean())
    return float(within / torch.stack(across).mean())


def seam_profile(mels: torch.Tensor, hop: int) -> torch.Tensor:
    """``(N, n_mels, T)`` -> ``(hop,)``: mean ``|x[t+1] - x[t]|`` over clips and bins for the frame
    boundaries ``t -> t+1`` at each position ``t mod hop``, divided by its mean over positions (all
    close to 1: no position stands out)."""
    d = (mels[..., 1:] - mels[..., :-1]).abs().mean(dim=(0, 1))            # (T-1,)
    n = (len(d) // hop) * hop
    prof = d[:n].view(-1, hop).mean(0)
    return prof / prof.mean()


def continuation_accuracy(recipe, judge, data, prime_s: float, continue_s: float, n_per_genre: int,
                          seed: int = 0, temperature: float = 1.0) -> dict:
    """MelNet continues ``n_per_genre`` held-out real clips of every genre (``data``: an
    :class:`~.data.EvaluationData` of the run's cache and split): ``prime_s`` seconds of real audio,
    then ``continue_s`` seconds sampled. Judged: the continued part only (from the first frame after
    the prime), and the real audio that followed the same primes after the mel round trip (the
    ceiling), per genre."""
    from ..data.clips import spaced_chunks

    spec, fe, rate = recipe.spec, data.fe, data.rate
    p_frames, c_frames = frames_for_seconds(spec, prime_s) - 1, frames_for_seconds(spec, continue_s)
    p_samples, c_samples = spec.samples(p_frames + 1), spec.samples(c_frames)
    total = p_samples + c_samples
    chunks = spaced_chunks(data.cache, data.val_files, total, per_file=8, as_many_as_fit=True,
                           max_clips=n_per_genre * len(recipe.genres), seed=seed)
    wave, labels = data.clips(chunks, total)
    keep = torch.cat([torch.nonzero(labels == g)[:n_per_genre, 0] for g in range(len(recipe.genres))])
    wave, labels = wave[keep], labels[keep]
    with torch.no_grad():
        primes = fe(wave[:, :p_samples].to(fe.filterbank.device)).cpu()[..., :p_frames]
    # all clips in one batch, each continuing its own prime in its own genre
    mel = sample_mels(recipe, labels.tolist(), seed=seed, temperature=temperature, prime=primes,
                      n_frames=p_frames + c_frames)
    cont = invert(mel, fe)[:, spec.samples(p_frames + 1):]            # the audio of the sampled frames
    n = min(cont.shape[-1], c_samples)
    real_after = data.round_trip(wave)[:, p_samples:p_samples + n]
    window = n / rate
    return {
        "prime_seconds": spec.seconds(p_frames + 1), "continued_seconds": window,
        "clips": len(wave), "temperature": temperature,
        "continued": window_accuracy(judge, cont[:, :n], rate, labels, window),
        "real_continuation_round_trip": window_accuracy(judge, real_after, rate, labels, window),
    }


def blend_probabilities(recipe, judge, front_end, start: str, end: str, steps: int = 6, n: int = 8,
                        seed: int = 0, seconds: float | None = None) -> dict:
    """The judge's mean probability of every genre, and the share of clips assigned to each, along
    a cMelGAN blend from ``start`` to ``end`` in ``steps`` steps (``n`` clips per step, the same seeds)."""
    weights = blend_path(recipe.genres, start, end, steps)
    probs, assigned = [], []
    for w in weights:
        mel = sample_request(recipe, w, n, seed=seed, seconds=seconds)
        logits = judge.embed(invert(mel, front_end), recipe.spec.sample_rate)[1]
        probs.append(logits.softmax(-1).mean(0))
        pred = decide(logits)
        assigned.append(torch.stack([(pred == g).float().mean() for g in range(len(recipe.genres))]))
    return {"genres": list(recipe.genres), "start": start, "end": end,
            "weight_of_end": weights[:, recipe.genres.index(end)].tolist(),
            "probabilities": torch.stack(probs).tolist(), "assigned": torch.stack(assigned).tolist()}
