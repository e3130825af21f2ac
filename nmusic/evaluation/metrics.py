"""Sample-quality numbers on a judge's view of a clip (paper sections 5 and 7).

The paper reported parameters and speed (Table 1) and planned opinion scores; it had no number for
"does this sound like music of that genre" nor for "whom does a generated piece resemble" (the
copyright question of section 7). With the judge of :mod:`nmusic.evaluation.judge` (trained on real clips
only, listening to audio), this module computes, from its features:

* :func:`frechet_distance` between two sets of clips (generated vs real held-out). The estimate is
  biased by the sample size, so it is read against a *floor* computed at the same size: two
  disjoint halves of the held-out files (:func:`split_halves`), real music against real music;
* :func:`kernel_distance`, the unbiased squared MMD with the cubic polynomial kernel of the KID
  (Bińkowski et al. 2018): no bias from the sample size, so its floor is about zero;
* :func:`originality`: for each generated clip, the nearest training clip by cosine distance of
  the features, compared with how near *real unseen* music comes to the training set (held-out
  clips against training clips). A clip nearer to the training set than all but ``percentile`` %
  of held-out clips is flagged as a possible copy (see :func:`originality` for why).

Shapes: features ``(N, D)``, labels ``(N,)``. Everything runs in float64 on the CPU (small matrices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: Default percentile of held-out-to-train nearest distances below which a generated clip is flagged.
COPY_PERCENTILE = 5.0
#: Distances at or below this are exact copies, whatever the threshold (cosine distances of float32 features).
EXACT_COPY = 1e-6


def _matrix(x, name: str, min_rows: int = 1) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().double()
    if x.dim() != 2 or x.shape[0] < min_rows:
        raise ConfigError(f"{name}: need a (N, D) matrix with N >= {min_rows} rows (got shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name}: contains NaN or infinite values")
    return x


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix (negative rounding errors clipped)."""
    w, v = torch.linalg.eigh((c + c.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a, b) -> float:
    """``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` between feature sets ``(N_a, D)``, ``(N_b, D)``.

    ``tr (C_a C_b)^(1/2)`` is computed as ``tr (C_a^(1/2) C_b C_a^(1/2))^(1/2)``, a symmetric PSD
    matrix, so it stays real and stable even when N < D (singular covariances).
    """
    a, b = _matrix(a, "frechet_distance: first set", 2), _matrix(b, "frechet_distance: second set", 2)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"frechet_distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    s = _sqrt_psd(ca)
    cross = torch.linalg.eigvalsh(s @ cb @ s).clamp_min(0).sqrt().sum()
    d = (a.mean(0) - b.mean(0)).square().sum() + ca.trace() + cb.trace() - 2 * cross
    return float(d.clamp_min(0))


def kernel_distance(a, b) -> float:
    """Unbiased squared MMD between ``(N_a, D)`` and ``(N_b, D)`` with ``k(x, y) = (x.y / D + 1)^3`` (KID).

    Unbiased: the diagonal terms are left out, so two samples of one distribution give about 0 (it
    can come out slightly negative) whatever the sample sizes.
    """
    a, b = _matrix(a, "kernel_distance: first set", 2), _matrix(b, "kernel_distance: second set", 2)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"kernel_distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    d = a.shape[1]
    kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    n, m = len(a), len(b)
    return float((kaa.sum() - kaa.trace()) / (n * (n - 1)) + (kbb.sum() - kbb.trace()) / (m * (m - 1))
                 - 2 * kab.mean())


def split_halves(groups, labels, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of two halves of items whose ``groups`` (e.g. source files) never straddle the halves.

    Groups are dealt alternately within each label (seeded), so both halves hold every label when it
    has at least two groups. ``groups (N,)`` and ``labels (N,)``; returns ``(first, second)``.
    """
    groups, labels = [int(x) for x in groups], [int(x) for x in labels]
    g = torch.Generator().manual_seed(int(seed))
    side: dict[int, int] = {}
    for label in sorted(set(labels)):
        members = sorted({grp for grp, lab in zip(groups, labels) if lab == label})
        order = torch.randperm(len(members), generator=g).tolist()
        for k, i in enumerate(order):
            side.setdefault(members[i], k % 2)
    first = [i for i, grp in enumerate(groups) if side[grp] == 0]
    second = [i for i, grp in enumerate(groups) if side[grp] == 1]
    return first, second


def lag_autocorrelation(x, max_lag: int) -> torch.Tensor:
    """Mean normalised autocorrelation of the rows of ``x (N, T)`` at lags ``1..max_lag``: ``(max_lag,)``.

    Each row's mean is removed; lag ``k`` is the mean of ``x[t] x[t + k]`` over the row's variance, averaged
    over rows. A beat of ``p`` frames shows as peaks at ``k = p, 2p, ...`` (``benchmarks/melnet_beat.py``).
    """
    x = _matrix(x, "lag_autocorrelation")
    if not 1 <= max_lag < x.shape[1]:
        raise ConfigError(f"lag_autocorrelation: max_lag must be in 1..{x.shape[1] - 1} for rows of {x.shape[1]} "
                          f"frames (got {max_lag})")
    x = x - x.mean(1, keepdim=True)
    var = (x * x).mean(1).clamp_min(1e-12)
    return torch.stack([((x[:, :-k] * x[:, k:]).mean(1) / var).mean() for k in range(1, max_lag + 1)])


def cosine_nearest(query, reference, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``query (Q, D)``, the nearest row of ``reference (R, D)`` by cosine distance.

    Returns ``(distance (Q,), index (Q,))`` with ``distance = 1 - cos`` in [0, 2].
    """
    q = F.normalize(_matrix(query, "cosine_nearest: query"), dim=1, eps=1e-12)
    r = F.normalize(_matrix(reference, "cosine_nearest: reference"), dim=1, eps=1e-12)
    dist, idx = [], []
    for i in range(0, len(q), chunk):
        d = (1 - q[i:i + chunk] @ r.T).clamp(0, 2)
        m = d.min(1)
        dist.append(m.values)
        idx.append(m.indices)
    return torch.cat(dist), torch.cat(idx)


def originality(generated, train, heldout, percentile: float = COPY_PERCENTILE) -> dict:
    """Nearest training clip of every generated clip, and which ones look copied.

    ``generated (G, D)``, ``train (R, D)``, ``heldout (H, D)``: judge features. The reference
    is the distribution of nearest-training-clip distances of *held-out* real clips: music the
    model never saw, from the same genres, recordings and production, so by construction not a
    copy. A generated clip is flagged when it is closer to a training clip than the
    ``percentile``-th percentile of that distribution, i.e. closer than (100 - percentile) % of
    genuinely new music comes: a one-sided test at level ``percentile`` % of the null hypothesis
    "as original as unseen real music". An honest generator therefore gets about ``percentile`` %
    of its clips flagged by chance; a rate well above it means memorisation. The default 5 % (rather
    than 1 %) is the smallest level that a held-out set of a few dozen clips can estimate: with
    fewer than 100 held-out clips the 1st percentile is just the minimum. Exact copies (distance
    <= 1e-6) are flagged whatever the threshold.

    Returns ``{"distance" (G,), "nearest" (G,) indices into train, "heldout_distance" (H,),
    "threshold", "percentile", "flagged" (G,) bool, "flag_rate", "expected_rate"}``.
    """
    if not 0 < percentile < 100:
        raise ConfigError(f"originality: percentile must be in (0, 100) (got {percentile})")
    dist, nearest = cosine_nearest(generated, train)
    ref, _ = cosine_nearest(heldout, train)
    threshold = float(torch.quantile(ref, percentile / 100))
    flagged = (dist < threshold) | (dist <= EXACT_COPY)
    return {"distance": dist, "nearest": nearest, "heldout_distance": ref, "threshold": threshold,
            "percentile": float(percentile), "flagged": flagged, "flag_rate": float(flagged.double().mean()),
            "expected_rate": float(percentile) / 100}
