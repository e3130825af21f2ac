"""Figures shared by the notebooks, the trainer and the reports (matplotlib, no display needed).

Every function returns the matplotlib Figure; ``path=`` also saves it as PNG (atomically: a
``loss.png`` on Drive is never half-written) and closes it.
"""
from __future__ import annotations

import re

import numpy as np
import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import torch

from .utils.files import atomic_write

#: History entries that are bookkeeping, not losses.
NOT_LOSSES = ("step", "split", "elapsed_s", "steps_per_s", "skipped_steps")


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
        plt.close(fig)
    return fig


def spectrogram(mel: torch.Tensor, title: str = "", path=None, ax=None):
    """One normalised log-mel ``(n_mels, frames)`` as an image, low frequencies at the bottom."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.imshow(mel.detach().float().cpu().numpy(), origin="lower", aspect="auto", vmin=-1, vmax=1, cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    return _finish(fig, path) if fig is not None else ax.figure


def spectrogram_grid(mels: torch.Tensor, titles: list[str], path=None, cols: int = 3):
    """``(N, n_mels, frames)`` spectrograms in a grid."""
    n = len(mels)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, m, t in zip(axes.flat, mels, titles):
        spectrogram(m, t, ax=ax)
    return _finish(fig, path)


def loss_panel(key: str, keys) -> str:
    """The panel a history key is drawn in: one per MelNet tier (training and validation together),
    the discriminator's losses, its logits, the generator's losses, the validation figures that have
    no training twin, and the rest ("loss")."""
    tier = re.search(r"tier(\d+)", key)
    if tier:
        return f"tier {tier.group(1)}"
    if key.startswith("val_"):
        twin = key[len("val_"):]
        return loss_panel(twin, keys) if twin in keys else "validation"
    head = key.split("_")[0]
    if head == "d":
        return "discriminator loss" if "loss" in key else "discriminator logits"
    return {"g": "generator"}.get(head, "loss")


def loss_panels(history: list[dict]) -> dict[str, list[str]]:
    """``{panel title: [keys]}`` of the numeric, non-bookkeeping keys of ``history``, in order of appearance."""
    keys = [k for k in dict.fromkeys(k for h in history for k in h)
            if k not in NOT_LOSSES and any(isinstance(h.get(k), (int, float)) for h in history)]
    panels: dict[str, list[str]] = {}
    for k in keys:
        panels.setdefault(loss_panel(k, keys), []).append(k)
    return panels


def loss_curves(history: list[dict], path=None):
    """Losses against step from a trainer history (``[{"step", "split", key: value, ...}]``), one panel
    per group of losses (:func:`loss_panels`) so that each is readable at a glance; validation
    entries are drawn with markers."""
    panels = loss_panels(history)
    cols = min(3, max(len(panels), 1))
    rows = (len(panels) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, keys) in zip(axes.flat, panels.items()):
        for k in keys:
            pts = [(h["step"], h[k]) for h in history if isinstance(h.get(k), (int, float))]
            val = k.startswith("val_")
            ax.plot(*zip(*pts), label=k, marker="o" if val else None, markersize=3, lw=1 if val else 1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    return _finish(fig, path)


def bar_chart(values: dict[str, float], ylabel: str, title: str = "", path=None):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _finish(fig, path)


def confusion(cm, genres: list[str], title: str = "", path=None):
    """Confusion matrix (rows: true or asked-for genre, columns: the judge's answer; a last column
    beyond the genres counts "undecided")."""
    cm = torch.as_tensor(cm)
    cols = list(genres) + ["undecided"] * (cm.shape[1] - len(genres))
    fig, ax = plt.subplots(figsize=(3.8 + 0.5 * (len(cols) - len(genres)), 3.4))
    ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(genres)), genres)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=9)
    ax.set_xlabel("judged")
    ax.set_ylabel("true / asked for")
    ax.set_title(title, fontsize=9)
    return _finish(fig, path)


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes (for ipywidgets.Image); the figure is closed."""
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def fd_bars(names: list[str], values: list[float], floors: list[float], title: str = "", path=None):
    """Fréchet distance per run (bars) with the real-vs-real floor of each (black ticks); lower is better."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5) + 2.5, 3))
    x = list(range(len(names)))
    ax.bar(x, values, color="tab:orange", label="generated vs real held-out")
    ax.scatter(x, floors, marker="_", s=900, color="black", zorder=3, label="floor: real train vs held-out")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("Fréchet distance")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(fig, path)


def nearest_distances(heldout, generated, threshold: float, title: str = "", path=None):
    """Histograms of nearest-training-clip cosine distances: real held-out vs generated, copy threshold."""
    fig, ax = plt.subplots(figsize=(5.5, 3))
    h = torch.as_tensor(heldout).double()
    g = torch.as_tensor(generated).double()
    hi = float(torch.cat([h, g]).max()) if len(h) + len(g) else 1.0
    bins = torch.linspace(0, max(hi, 1e-6) * 1.05, 30).tolist()
    ax.hist(h.tolist(), bins=bins, alpha=0.6, density=True, label="real held-out -> train")
    ax.hist(g.tolist(), bins=bins, alpha=0.6, density=True, label="generated -> train")
    ax.axvline(threshold, color="red", ls="--", label="copy threshold")
    ax.set_xlabel("cosine distance to the nearest training clip")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _finish(fig, path)


def mos_bars(summary: list[dict], by: str = "source", title: str = "", path=None):
    """Mean opinion score per source with its 95% confidence interval (from
    :func:`nmusic.evaluation.listening_test.summarise`)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(summary) + 1.5), 3))
    names = [s[by] for s in summary]
    means = [s["mean"] for s in summary]
    err = [0.0 if s["half_width"] != s["half_width"] else s["half_width"] for s in summary]  # NaN -> no bar
    ax.bar(range(len(names)), means, yerr=err, capsize=4, color="tab:green")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 5.2)
    ax.set_ylabel("MOS (1-5)")
    ax.set_title(title, fontsize=9)
    return _finish(fig, path)


def blend_curve(result: dict, title: str = "", path=None):
    """The judge's mean probability of every genre along a genre blend
    (:func:`nmusic.evaluation.long_clips.blend_probabilities`)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    probs = torch.tensor(result["probabilities"])
    for g, name in enumerate(result["genres"]):
        ax.plot(result["weight_of_end"], probs[:, g], marker="o", label=name)
    ax.set_xlabel(f"weight of {result['end']} (the rest: {result['start']})")
    ax.set_ylabel("judge's mean probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"genre blend {result['start']} -> {result['end']}", fontsize=9)
    ax.legend(fontsize=7)
    return _finish(fig, path)


TRACK_COLOURS = ((0.85, 0.2, 0.2), (0.2, 0.4, 0.9), (0.2, 0.7, 0.3), (0.9, 0.6, 0.1))   # drums, bass, chords, melody


def piano_roll(rolls: torch.Tensor, title: str = "", ax=None, pitch_low: int = 0, path=None):
    """Piano-roll bars ``(bars, tracks, steps, pitches)`` as one image: time across, pitch up, a colour per
    track (drums red, bass blue, chords green, melody orange), bar lines."""
    from .data.midi import TRACKS
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 2.6))
    r = torch.as_tensor(rolls).bool().cpu()
    bars, tracks, steps, pitches = r.shape
    img = np.ones((pitches, bars * steps, 3))
    for t in range(tracks):
        on = r[:, t].permute(2, 0, 1).reshape(pitches, bars * steps).numpy()
        img[on] = TRACK_COLOURS[t % len(TRACK_COLOURS)]
    ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, bars * steps, pitch_low - 0.5, pitch_low + pitches - 0.5))
    for b in range(1, bars):
        ax.axvline(b * steps, color="0.6", lw=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"step (16 per bar; {', '.join(TRACKS[:tracks])})")
    ax.set_ylabel("MIDI pitch")
    return _finish(fig, path) if fig is not None else ax.figure


def piano_roll_and_spectrogram(rolls: torch.Tensor, mel: torch.Tensor, title: str = "", pitch_low: int = 0,
                               path=None):
    """A note-based clip: its piano-roll beside the log-mel of the audio it was played as."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 2.8))
    piano_roll(rolls, f"{title}: notes", ax=a, pitch_low=pitch_low)
    spectrogram(mel, f"{title}: as played", ax=b)
    return _finish(fig, path)
