"""An independent genre classifier on log-mels: the judge of "does it sound like the genre asked for".

Trained only on *real* training clips (files split from the held-out ones), it reports its accuracy
on real held-out clips (the ceiling) and on generated clips per genre (conditional accuracy). Its
penultimate features serve the Fréchet distance and nearest-neighbour originality metrics
(:mod:`nmusic.metrics`). The paper planned opinion scores and gave up (section 5); this measures
the same question with no pretrained network to download.

Shapes: input ``(B, n_mels, frames)`` normalised log-mel from :class:`nmusic.audio.MelFrontEnd`,
any number of frames (global pooling over time); logits ``(B, n_genres)``; features ``(B, 128)``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .audio import MelFrontEnd, SpecParams
from .errors import CheckpointError

FEATURE_DIM = 128


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class GenreCNN(nn.Module):
    """Four conv blocks, pooled to 4 frequency bands x global time, then a 128-d feature layer."""

    def __init__(self, n_genres: int, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(_block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d((4, 1))
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(16 * w, FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, n_genres))

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames) -> (B, 128)`` penultimate features."""
        return self.feature(self.pool(self.body(mel.unsqueeze(1))))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mel))


class GenreClassifier:
    """A trained :class:`GenreCNN` with the genre list and spectrogram parameters it was trained on."""

    def __init__(self, model: GenreCNN, genres: list[str], spec: SpecParams, clip_frames: int, metrics=None):
        self.model, self.genres, self.spec, self.clip_frames = model.eval(), list(genres), spec, clip_frames
        self.metrics = dict(metrics or {})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _batched(self, fn, mel: torch.Tensor, batch: int = 64) -> torch.Tensor:
        self.model.eval()
        return torch.cat([fn(mel[i:i + batch].to(self.device).float()).cpu() for i in range(0, len(mel), batch)])

    def logits(self, mel: torch.Tensor) -> torch.Tensor:
        return self._batched(self.model, mel)

    def predict(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, frames)`` -> ``(B,)`` predicted genre ids."""
        return self.logits(mel).argmax(-1)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        return self._batched(self.model.features, mel)

    def embed(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``(B, n_mels, frames)`` -> features ``(B, 128)`` and logits ``(B, n_genres)`` (CPU)."""
        feats = self.features(mel)
        return feats, self._batched(self.model.head, feats)

    def accuracy(self, mel: torch.Tensor, labels: torch.Tensor) -> dict:
        """Overall and per-genre accuracy plus the confusion matrix (rows: true, cols: predicted)."""
        pred = self.predict(mel)
        return accuracy_report(pred, labels.cpu(), self.genres)

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"format": "nmusic-classifier-1", "genres": self.genres, "spec": self.spec.to_dict(),
                    "clip_frames": self.clip_frames, "width": self.model.body[0][0].out_channels,
                    "state_dict": self.model.state_dict(), "metrics": self.metrics}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path, device="cpu") -> "GenreClassifier":
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
            model = GenreCNN(len(ck["genres"]), ck["width"])
            model.load_state_dict(ck["state_dict"])
        except (OSError, RuntimeError, KeyError, EOFError) as e:
            raise CheckpointError(f"{path}: not a readable nmusic classifier ({e}); retrain it "
                                  "(`nmusic evaluate` does so when the file is missing)") from None
        return cls(model.to(device), ck["genres"], SpecParams.from_dict(ck["spec"]), ck["clip_frames"], ck["metrics"])


def accuracy_report(pred: torch.Tensor, labels: torch.Tensor, genres: list[str]) -> dict:
    n = len(genres)
    cm = torch.zeros(n, n, dtype=torch.long)
    cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per = {g: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")) for i, g in enumerate(genres)}
    return {"accuracy": float((pred == labels).float().mean()) if len(labels) else float("nan"),
            "per_genre": per, "confusion": cm.tolist(), "n": int(len(labels))}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, fe: MelFrontEnd, loader, batches: int) -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` batches of ``loader`` with the final weights.

    The running averages (momentum 0.1) lag behind the weights, and after a short training run they
    still sit near their initial values (mean 0, variance 1): in eval mode such a model can give one
    answer for every input although it classifies its training batches perfectly.
    ``torch.optim.swa_utils.update_bn`` recomputes them as plain averages over the given batches.
    """
    if batches < 1:
        return
    device = next(model.parameters()).device
    mels = [fe(wave.to(device)) for _, (wave, _) in zip(range(batches), loader)]
    torch.optim.swa_utils.update_bn(mels, model)


def train_classifier(cache, train_files, val_files, spec: SpecParams, clip_frames: int = 128, steps: int = 300,
                     batch_size: int = 32, lr: float = 2e-3, seed: int = 0, device="cpu", width: int = 16,
                     progress: bool = True, bn_batches: int = 8) -> GenreClassifier:
    """Train on random real chunks of ``train_files``; report accuracy on fixed chunks of ``val_files``.

    Augmentation: a random gain of +-6 dB (a shift of the log-mel) so that the classifier judges
    content, not loudness. Afterwards the BatchNorm statistics are re-estimated on ``bn_batches``
    training batches (:func:`recalibrate_batchnorm`).
    """
    from .dataset import fixed_clips, make_loader

    torch.manual_seed(seed)
    device = torch.device(device)
    fe = MelFrontEnd(spec).to(device)
    model = GenreCNN(len(cache.genres), width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loader = make_loader(cache, train_files, spec.samples(clip_frames), batch_size, seed=seed)
    scale = 2 / (torch.log(torch.tensor(spec.log_ceil / spec.log_floor)))  # normalised units per neper
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(zip(range(steps), loader), total=steps, desc="genre classifier", disable=not progress)
    for _, (wave, genre) in bar:
        mel = fe(wave.to(device))
        gain = (torch.rand(len(mel), 1, 1, device=device) - 0.5) * 2 * 0.69 * scale  # +-6 dB
        mel = (mel + gain * (mel > -1)).clamp(-1, 1)
        loss = F.cross_entropy(model(mel), genre.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    recalibrate_batchnorm(model, fe, make_loader(cache, train_files, spec.samples(clip_frames), batch_size,
                                                 seed=seed + 1), bn_batches)
    clf = GenreClassifier(model.eval(), cache.genres, spec, clip_frames)
    wave, labels = fixed_clips(cache, val_files, spec.samples(clip_frames), seed=seed)
    with torch.no_grad():
        mel = torch.cat([fe(wave[i:i + 64].to(device)).cpu() for i in range(0, len(wave), 64)])
    clf.metrics = {"real_heldout": clf.accuracy(mel, labels), "train_seconds": time.perf_counter() - t0,
                   "steps": steps, "val_files": len(val_files), "train_files": len(train_files),
                   "bn_batches": bn_batches}
    return clf
