"""cMelGAN's losses (logits in, scalar out) and its validation statistic.

``loss`` picks the objective: ``"hinge"`` (the default: the discriminator stops pushing once a sample
is classified with margin 1), ``"bce"`` (the paper's sigmoid + binary cross-entropy, computed on
logits) or ``"lsgan"`` (least squares). The discriminator's negatives are the generated clips and,
matching-aware, real clips with a wrong genre (Reed et al. 2016).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_terms(loss: str, real: torch.Tensor, fake: torch.Tensor, wrong: torch.Tensor | None = None) -> dict:
    """Discriminator loss and its parts. ``real``: logits of (real, right genre), target "real";
    ``fake``: (generated, genre) and ``wrong``: (real, wrong genre), both target "fake"."""
    if loss == "hinge":
        pos, neg = (lambda x: F.relu(1 - x).mean()), (lambda x: F.relu(1 + x).mean())
    elif loss == "bce":
        pos, neg = (lambda x: F.softplus(-x).mean()), (lambda x: F.softplus(x).mean())
    else:  # lsgan
        pos, neg = (lambda x: ((x - 1) ** 2).mean() / 2), (lambda x: (x ** 2).mean() / 2)
    terms = {"d_loss_real": pos(real), "d_loss_fake": neg(fake)}
    if wrong is not None:
        terms["d_loss_wrong"] = neg(wrong)
        terms["d_loss"] = terms["d_loss_real"] + (terms["d_loss_fake"] + terms["d_loss_wrong"]) / 2
    else:
        terms["d_loss"] = terms["d_loss_real"] + terms["d_loss_fake"]
    return terms


def g_adv_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss on (generated, genre) logits (non-saturating for BCE)."""
    if loss == "hinge":
        return -fake.mean()
    if loss == "bce":
        return F.softplus(-fake).mean()
    return ((fake - 1) ** 2).mean() / 2


def feature_matching_loss(fake_feats, real_feats) -> torch.Tensor:
    """Mean over layers of L1 between batch-mean feature maps of fakes and (detached) reals."""
    terms = [(f.float().mean(0) - r.detach().float().mean(0)).abs().mean() for f, r in zip(fake_feats, real_feats)]
    return torch.stack(terms).mean()


def stat_distance(real: torch.Tensor, fake: torch.Tensor, genre: torch.Tensor) -> dict:
    """Per-genre per-mel-bin mean/std distance between ``real`` and ``fake`` ``(B, F, T)`` clips."""
    means, stds = [], []
    for g in genre.unique():
        r, f = real[genre == g].float(), fake[genre == g].float()
        r, f = r.transpose(0, 1).reshape(r.shape[1], -1), f.transpose(0, 1).reshape(f.shape[1], -1)  # (F, n*T)
        means.append((r.mean(1) - f.mean(1)).abs().mean())
        stds.append((r.std(1, correction=0) - f.std(1, correction=0)).abs().mean())
    m, s = torch.stack(means).mean(), torch.stack(stds).mean()
    return {"stat_distance": float(m + s), "mean_l1": float(m), "std_l1": float(s)}
