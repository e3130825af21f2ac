"""Sampling from MelNet: cached incremental sampling and the naive baseline (paper 3.1, 3.1.2).

Cached sampling (:func:`sample_tier`) exploits the structure of the stacks. The time-delayed and
centralized stacks for frame ``i`` depend only on frames ``< i``, so each frame advances their time
RNN states by one step and runs the frequency-direction RNN of the time-delayed stack over the one
previous frame. Within the frame, the frequency-delayed stack advances one bin at a time with its
own state, which is reset at every frame. The cost is therefore linear in the number of elements;
nothing is ever re-run over the prefix.

:func:`sample_tier_naive` is the baseline: for every element it re-runs the full network over the
whole prefix (frames ``<= i``), so its cost grows quadratically. Both consume random numbers in the
same order, so with the same generator they return the same samples.

Multi-tier sampling (:func:`sample`) draws tier 1, then each later tier conditioned on the
interleaved coarser tiers, and interleaves. Priming: the first frames of every tier are taken from
the split of a given real clip (their frames warm the RNN states), the rest is sampled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.progress import progress_bar
from . import gmm
from .tiers import Tier, interleave, split, split_axes, tier_shapes


class FrequencySteps:
    """The frequency-delayed stacks of all layers of a tier, stepped one bin at a time.

    Per frame, everything that does not depend on the previous bin is computed at once; per bin
    only the recurrence is left: per layer one fused cell (``torch.lstm_cell`` / ``torch.gru_cell``,
    the arithmetic of ``nn.LSTM`` / ``nn.GRU``) and one ``addmm`` for ``W_f``; then the head and the
    draw. The cell's input is the carried ``h^f[l-1]`` plus the time stack's ``u = h^t[l] + h^c[l]``;
    two ways to hand ``u`` over give the same numbers:

    * ``project_inputs=True`` (the default on a CPU): per frame, every layer's input projection of
      ``u`` for all bins, ``W_ih u + b`` ``(B, F, G·D)``, in one matmul, given to the cell as its
      input bias. CPU cells broadcast such a per-row bias;
    * ``project_inputs=False`` (the default elsewhere): the fused CUDA cells take 1-D biases only
      (a per-row bias is an error there), so ``u`` is added to the cell's input, one more addition
      per layer and bin.

    The biases of the ``W_f`` maps are folded forward: with ``beta_l`` the sum of the biases of
    layers ``< l``, the stack carries ``h^f[l] - beta_l``, ``beta_l`` enters layer ``l``'s input
    bias (``beta_l W_ih``) and ``beta_L`` the head's bias. The numbers equal the full pass up to
    rounding (tests: 1e-12 in float64, both ways).
    """

    def __init__(self, tier: Tier, temperature: float = 1.0, project_inputs: bool | None = None):
        self.tier, self.temperature = tier, temperature
        self.lstm = isinstance(tier.layers[0].freq_rnn, nn.LSTM)
        if project_inputs is None:
            project_inputs = tier.in_f.weight.device.type == "cpu"
        self.project_inputs = project_inputs
        self.w_in = tier.in_f.weight[:, 0]                       # h^f[0] = x[i, j-1] w_in + b_in (+ z)
        self.cells = []                                          # per layer: w_ih, w_hh, b_ih, b_hh, W_f^T
        beta = torch.zeros_like(tier.in_f.bias)
        for layer in tier.layers:
            rnn = layer.freq_rnn
            b, b_hh = rnn.bias_ih_l0 + F.linear(beta, rnn.weight_ih_l0), rnn.bias_hh_l0
            if self.lstm and project_inputs:                     # LSTM: both biases add up front
                b, b_hh = b + b_hh, None
            self.cells.append((rnn.weight_ih_l0, rnn.weight_hh_l0, b, b_hh, layer.W_f.weight.t()))
            beta = beta + layer.W_f.bias
        self.head_w, self.head_b = tier.head.weight.t(), tier.head.bias + F.linear(beta, tier.head.weight)

    def inputs(self, l: int, u: torch.Tensor) -> tuple:
        """Per bin, what layer ``l``'s cell gets from the time stack's ``u (B, F, D)``: its
        projection ``(B, G·D)`` (``project_inputs``) or ``u[:, j]`` itself."""
        if not self.project_inputs:
            return u.unbind(1)
        w_ih, _, b, _, _ = self.cells[l]
        B, F_, D = u.shape
        return torch.addmm(b, u.reshape(B * F_, D), w_ih.t()).view(B, F_, -1).unbind(1)

    def step(self, l: int, h: torch.Tensor, g: torch.Tensor, state):
        """Layer ``l`` at one bin: carried ``h (B, D)``, time-stack input ``g`` (see :meth:`inputs`),
        cell ``state``."""
        w_ih, w_hh, b, b_hh, w_f = self.cells[l]
        x, b_ih = (h, g) if self.project_inputs else (h + g, b)
        if self.lstm:
            out, c = torch.lstm_cell(x, state, w_ih, w_hh, b_ih, b_hh)
            state = (out, c)
        else:
            out = state = torch.gru_cell(x, state, w_ih, w_hh, b_ih, b_hh)
        return torch.addmm(h, out, w_f), state

    def frame(self, hts: list, hcs: list, z_i: torch.Tensor | None, noise: tuple | None, record: bool = False):
        """A new frame ``x[i] (B, F)`` from the stacks' inputs of every layer, ``h^t[l] (B, 1, F, D)``
        and ``h^c[l] (B, 1, D) | None``, and the frame's random numbers (:func:`.gmm.draw_noise`).

        With ``record`` also returns the mixture parameters of every bin, ``(B, F, 3, K)``.
        """
        tier, B, F_ = self.tier, hts[0].shape[0], self.tier.n_freq
        proj = []
        for l, (h_t, h_c) in enumerate(zip(hts, hcs)):
            u = h_t[:, 0] if h_c is None else h_t[:, 0] + h_c[:, 0, None]          # (B, F, D)
            proj.append(self.inputs(l, u))
        bias = (tier.in_f.bias if z_i is None else tier.in_f.bias + z_i[:, 0]).expand(B, F_, -1).unbind(1)
        noise = list(zip(noise[0].unbind(1), noise[1].unbind(1))) if noise is not None else [None] * F_
        zeros = hts[0].new_zeros(B, tier.dim)
        state = [(zeros, zeros) if self.lstm else zeros] * len(self.cells)
        prev = hts[0].new_zeros(B, 1)
        frame, params_per_bin = [], []
        for j in range(F_):
            h = torch.addcmul(bias[j], prev, self.w_in)
            for l in range(len(self.cells)):
                h, state[l] = self.step(l, h, proj[l][j], state[l])
            params = tier.mixture(torch.addmm(self.head_b, h, self.head_w))             # (B, K)
            prev = gmm.sample(params, self.temperature, noise=noise[j])[:, None]
            frame.append(prev)
            if record:
                params_per_bin.append(params.stacked())
        x = torch.cat(frame, dim=1)
        return (x, torch.stack(params_per_bin, dim=1)) if record else (x, None)


def _rows(z: torch.Tensor | None, i: int, axis: int) -> torch.Tensor | None:
    """Row ``i`` of the conditioning along ``axis`` (kept when it is broadcast there)."""
    if z is None or z.shape[axis] == 1:
        return z
    return z.narrow(axis, i, 1)


def _start(tier: Tier, genre: torch.Tensor, n_frames: int, context, prime, condition: bool = True):
    p = next(tier.parameters())
    B = genre.shape[0]
    x = torch.zeros(B, n_frames, tier.n_freq, dtype=p.dtype, device=p.device)
    n_prime = 0
    if prime is not None:
        n_prime = min(prime.shape[1], n_frames)
        x[:, :n_prime] = prime[:, :n_prime].to(x)
    z = tier.condition(genre, context, n_frames) if condition else None
    return x, z, n_prime


@torch.no_grad()
def sample_tier(tier: Tier, n_frames: int, genre: torch.Tensor, context: torch.Tensor | None = None,
                prime: torch.Tensor | None = None, temperature: float = 1.0,
                generator: torch.Generator | None = None, record: bool = False, progress=None,
                project_inputs: bool | None = None):
    """Cached sampling of one tier: ``(B, n_frames, tier.n_freq)``.

    ``prime (B|1, P, F)`` fixes the first ``P`` frames. With ``record=True`` also returns the
    mixture parameters used for every element, stacked ``(B, T, F, 3, K)`` (see
    :meth:`MixtureParams.stacked`), to compare against the full pass.

    Per frame, the time-delayed (+ centralized) stacks advance one step; per bin, only what depends
    on the previous bin is computed (:class:`FrequencySteps`). Everything else is batched over the
    frame beforehand: the conditioning of every bin, each layer's input projection of the time
    stack, and the frame's random numbers (:func:`.gmm.draw_noise`). ``project_inputs``: see
    :class:`FrequencySteps` (default: by device).
    """
    x, z, n_prime = _start(tier, genre, n_frames, context, prime)
    B, F_ = x.shape[0], tier.n_freq
    L = len(tier.layers)
    time_state, central_state = [None] * L, [None] * L
    prev = torch.zeros_like(x[:, :1])                     # x[-1] = 0, as in the full pass
    steps = FrequencySteps(tier, temperature, project_inputs)
    records = []
    for i in range(n_frames):
        z_i = _rows(z, i, 1)
        h_t, h_c = tier.time_inputs(prev, z_i)
        hts, hcs = [], []
        for l, layer in enumerate(tier.layers):
            h_t, time_state[l] = layer.time_stack(h_t, time_state[l])
            if tier.central:
                h_c, central_state[l] = layer.central_stack(h_c, central_state[l])
            hts.append(h_t)
            hcs.append(h_c)
        if i < n_prime:       # known frame: only the time-direction states need it
            if record:
                h_f = tier.freq_inputs(F.pad(x[:, i:i + 1], (1, 0))[..., :-1], z_i)
                for l, layer in enumerate(tier.layers):
                    h_f, _ = layer.freq_stack(h_f, hts[l], hcs[l])
                records.append(tier.mixture(tier.head(h_f)).stacked())
        else:                 # new frame: bin by bin, carrying the frequency-delayed stack's state
            noise = gmm.draw_noise((B, F_), generator, x.device, x.dtype) if temperature > 0 else None
            frame, frame_records = steps.frame(hts, hcs, z_i, noise, record)
            x[:, i] = frame
            if record:
                records.append(frame_records[:, None])
        prev = x[:, i:i + 1]
        if progress is not None:
            progress.update(1)
    return (x, torch.cat(records, dim=1)) if record else x


NAIVE = ("element", "frame")


@torch.no_grad()
def sample_tier_naive(tier: Tier, n_frames: int, genre: torch.Tensor, context: torch.Tensor | None = None,
                      prime: torch.Tensor | None = None, temperature: float = 1.0,
                      generator: torch.Generator | None = None, progress=None, per: str = "element") -> torch.Tensor:
    """Baselines without caching (benchmarks), ``per`` = ``"element"`` or ``"frame"``.

    ``"element"``: one full forward over frames ``<= i`` per element ``(i, j)``; exact, and draws
    the same samples as :func:`sample_tier` from the same generator. ``"frame"``: the seed's
    sampler, one forward of the whole tier network (conditioning included) over frames ``<= i``
    per frame, every bin of frame ``i`` drawn from that one pass (bins of the frame do not see
    each other, so it is not the model's distribution; it is the speed yardstick).
    """
    if per not in NAIVE:
        raise ValueError(f"per must be one of {NAIVE}, got {per!r}")
    x, z, n_prime = _start(tier, genre, n_frames, context, prime, condition=per == "element")
    B, F_ = x.shape[0], tier.n_freq
    for i in range(n_prime, n_frames):
        noise = gmm.draw_noise((B, F_), generator, x.device, x.dtype) if temperature > 0 else None
        if per == "frame":
            theta = tier(x[:, :i + 1], genre, context)[:, i]
            x[:, i] = gmm.sample(tier.mixture(theta), temperature, noise=noise)
        else:
            z_prefix = z if z is None or z.shape[1] == 1 else z[:, :i + 1]
            for j in range(F_):
                theta = tier(x[:, :i + 1], genre, z=z_prefix)[:, i, j]
                x[:, i, j] = gmm.sample(tier.mixture(theta), temperature,
                                        noise=None if noise is None else (noise[0][:, j], noise[1][:, j]))
        if progress is not None:
            progress.update(1)
    return x


@torch.no_grad()
def sample(tiers: list[Tier], genre: torch.Tensor, n_frames: int, n_mels: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, prime: torch.Tensor | None = None,
           naive: bool | str = False, progress: bool = False, given: list[torch.Tensor] = ()) -> torch.Tensor:
    """All tiers, coarse to fine: ``(B,)`` genres -> ``(B, n_frames, n_mels)`` (time-major).

    ``prime (B|1, P, n_mels)`` (time-major) becomes the first ``P`` frames of the result.
    ``naive``: ``False`` (cached sampling), ``True`` or ``"element"`` (re-run per element) or
    ``"frame"`` (re-run per frame, the seed's sampler); see :func:`sample_tier_naive`.
    ``given``: tiers ``1..k`` (``split`` of a ``(B, n_frames, n_mels)`` spectrogram) taken as they are
    instead of sampled; the finer tiers are sampled conditioned on them (which tier falls short).
    """
    per = "element" if naive is True else naive or None
    if per is not None and per not in NAIVE:
        raise ValueError(f"naive must be False, True, 'element' or 'frame', got {naive!r}")
    G = len(tiers)
    shapes, axes = tier_shapes(n_frames, n_mels, G), split_axes(G)
    primes = split(prime, G)[0] if prime is not None else [None] * G
    if prime is not None and prime.shape[0] == 1:
        primes = [p.expand(genre.shape[0], -1, -1) for p in primes]
    bar = progress_bar(total=sum(s[0] for s in shapes), desc="melnet sampling", unit="frame", disable=not progress)
    x = None
    for g, tier in enumerate(tiers):
        if g < len(given):
            fine = given[g].to(next(tier.parameters()))
            bar.update(shapes[g][0])
        elif per:
            fine = sample_tier_naive(tier, shapes[g][0], genre, x, primes[g], temperature, generator, bar, per)
        else:
            fine = sample_tier(tier, shapes[g][0], genre, x, primes[g], temperature, generator, progress=bar)
        x = fine if g == 0 else interleave(x, fine, axes[g])
    bar.close()
    return x


def sample_naive(tiers: list[Tier], genre: torch.Tensor, n_frames: int, n_mels: int, per: str = "element",
                 **kwargs) -> torch.Tensor:
    """:func:`sample` with a naive re-run of the network per element or per frame (benchmark baselines)."""
    return sample(tiers, genre, n_frames, n_mels, naive=per, **kwargs)
