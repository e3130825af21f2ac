"""Gaussian mixture output of MelNet (paper 3.1 and 3.1.3: mixture density network loss).

Each element ``x[i, j]`` gets a ``K``-component 1-D Gaussian mixture from the last hidden state:
``theta (..., 3K) -> means (..., K), scales (..., K), logits (..., K)``. Scales are
``scale_floor + softplus(raw)`` so that the density stays bounded where the data piles up (silence
is exactly -1 after normalisation). The loss is the exact mixture negative log-likelihood,
``-logsumexp_k(log pi_k + log N(x | mu_k, sigma_k))``, computed by
``torch.distributions.MixtureSameFamily``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import distributions as D


@dataclass
class MixtureParams:
    """Per-element mixture parameters, each ``(..., K)``."""

    mu: torch.Tensor
    sigma: torch.Tensor
    logits: torch.Tensor

    def distribution(self) -> D.MixtureSameFamily:
        return D.MixtureSameFamily(D.Categorical(logits=self.logits, validate_args=False),
                                   D.Normal(self.mu, self.sigma, validate_args=False), validate_args=False)

    def stacked(self) -> torch.Tensor:
        """``(..., 3, K)`` for comparisons in tests."""
        return torch.stack([self.mu, self.sigma, torch.log_softmax(self.logits, -1)], dim=-2)


def init_head(head: torch.nn.Linear, k: int) -> None:
    """Start with means spread over [-1, 1], scales ~0.2 and uniform weights."""
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.zero_()
        head.bias[:k] = torch.linspace(-1, 1, k) if k > 1 else 0.0
        head.bias[k:2 * k] = math.log(math.expm1(0.2))


def mixture_params(theta: torch.Tensor, scale_floor: float) -> MixtureParams:
    """``theta (..., 3K)`` (computed in float32 at least) -> :class:`MixtureParams`."""
    if theta.dtype in (torch.float16, torch.bfloat16):
        theta = theta.float()
    mu, raw_scale, logits = theta.chunk(3, dim=-1)
    return MixtureParams(mu, scale_floor + F.softplus(raw_scale), logits)


def nll(params: MixtureParams, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per element (nats): ``x (...) -> (...)``."""
    return -params.distribution().log_prob(x.to(params.mu.dtype))


def draw_noise(shape: tuple, generator: torch.Generator | None = None, device=None, dtype=torch.float32):
    """Random numbers for :func:`sample` on elements of ``shape``: ``u (*shape, 1)`` uniform, ``eps (*shape)`` normal.

    Drawn from ``generator`` (on its own device) and moved to ``device``. Samplers draw them for a
    whole frame at once (one call instead of two per element) and hand slices to :func:`sample`.
    """
    gdev = generator.device if generator is not None else device
    u = torch.rand(tuple(shape) + (1,), generator=generator, device=gdev, dtype=dtype).to(device)
    eps = torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)
    return u, eps


def sample(params: MixtureParams, temperature: float = 1.0, generator: torch.Generator | None = None,
           clamp: tuple[float, float] | None = (-1.0, 1.0), noise: tuple | None = None) -> torch.Tensor:
    """Draw one value per element: ``(..., K) -> (...)``.

    ``temperature`` divides the mixture logits (sharper weights) and multiplies the scales;
    ``temperature == 0`` returns the mean of the most likely component. Random numbers come from
    ``generator`` (on any device; they are moved to the parameters' device), so sampling is
    reproducible; ``noise = (u, eps)`` from :func:`draw_noise` gives them instead. Samples are clamped
    to the data range.
    """
    mu, sigma, logits = params.mu, params.sigma, params.logits
    if temperature == 0:
        k = logits.argmax(-1, keepdim=True)
        out = mu.gather(-1, k).squeeze(-1)
    else:
        u, eps = noise if noise is not None else draw_noise(mu.shape[:-1], generator, mu.device, mu.dtype)
        cdf = torch.softmax(logits / temperature if temperature != 1 else logits, dim=-1).cumsum(-1)
        k = torch.searchsorted(cdf, u.contiguous()).clamp_max_(mu.shape[-1] - 1)   # inverse CDF: #{cdf < u}
        scaled = eps if temperature == 1 else temperature * eps
        out = torch.addcmul(mu.gather(-1, k), sigma.gather(-1, k), scaled.unsqueeze(-1)).squeeze(-1)
    return out.clamp(*clamp) if clamp is not None else out
