"""MelNet recipe: config, presets and training/sampling glue (paper 3.1 and 4.2).

The model is a multiscale MelNet (``tiers``): the spectrogram is split into tiers by
alternately halving time and frequency; tier 1 is an autoregressive MelNet conditioned on the genre,
every later tier is an autoregressive MelNet conditioned on the coarser tiers through a feature
extraction network. Every tier has its own likelihood (mixture NLL, ``gmm``) and is trained
on the ground-truth coarser tiers (teacher forcing), so tiers train independently: each tier is
its own module (``"tier1"``, ``"tier2"``, ...) with its own optimiser, and ``train_tiers`` picks
which ones a run trains.

Presets. ``tiny`` (601,784 parameters) runs on a CPU. ``paper-small`` / ``paper-large`` match
Table 1 of the paper (4.04M / 50.8M parameters) with the seed's spectrogram settings (180 mels,
hop 800, n_fft 2048, 22.05 kHz): 4,169,368 (+3.2%) and 50,262,712 (-1.1%). Counted are all
parameters of all tiers: the stacks (LSTM weights and both biases, ``W_t``, ``W_f``), input maps,
genre embedding (3 genres), feature extraction networks and mixture heads. A width-``d`` LSTM
layer has ``36 d^2 + 34 d`` parameters (``+ 9 d^2 + 9 d`` with the centralized stack), so the 27
layers of ``paper-small`` alone are 4,040,064; its feature extraction networks (width 32) add
about 40k per conditioned tier.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...config import require, tuples_from_lists
from ...errors import ConfigError
from ...frontend import SPEC_PRESETS, SpecParams
from ..base import Recipe, StepContext
from . import gmm
from .layers import RNN_TYPES
from .sampling import sample as sample_tiers
from .tiers import Tier, split, tier_shapes


@dataclass
class MelNetConfig:
    """MelNet hyper-parameters (see the module docstring for what each preset reproduces). Checked when
    made (:func:`check`); lists are stored as tuples."""

    spec: str = "default"            # spectrogram preset (nmusic.frontend.SPEC_PRESETS)
    clip_frames: int = 64            # frames per training clip
    batch_size: int = 8              # clips per step: tier 1 trains on all of them
    fine_batch_size: int = 0         # clips of each step that tiers >= 2 train on (0 = all of them)
    fine_clip_frames: int = 0        # first frames of each clip that tiers >= 2 train on (0 = all of them)
    fine_every: int = 1              # tiers >= 2 train on every n-th step only (tier 1 on every step)
    dim: int = 32                    # hidden width d of every stack
    layers: tuple[int, ...] = (4, 2, 2)   # layers per tier; len = number of tiers
    rnn: str = "lstm"                # "lstm" or "gru"
    central: bool = True             # centralized stack (RNN over whole frames)
    n_mixtures: int = 10             # Gaussian mixture components per element
    scale_floor: float = 5e-3        # smallest mixture scale (data range is [-1, 1])
    cond_dim: int = 32               # width of the feature extraction network (tiers >= 2)
    cond_layers: int = 1             # layers of the feature extraction network
    genre_all_tiers: bool = False    # genre embedding in every tier (always in tier 1)
    input_noise: tuple[float, ...] = ()   # per tier from tier 1: std of Gaussian noise on its inputs (not its
                                          # targets) while training; tiers past the list get none
    train_tiers: tuple[int, ...] = ()   # tiers to train (1-based); empty = all
    checkpoint: bool = False         # gradient checkpointing per layer
    lr: float = 3e-4                 # Adam
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0

    def __post_init__(self):
        tuples_from_lists(self)
        require(self.spec in SPEC_PRESETS, self, "spec", f"must be a spectrogram preset: one of {sorted(SPEC_PRESETS)}")
        check(self, SPEC_PRESETS[self.spec].n_mels)


def check(c: MelNetConfig, n_mels: int) -> None:
    """Raise :class:`ConfigError` naming the field when ``c`` cannot build a MelNet for ``n_mels`` bins."""
    require(len(c.layers) >= 1 and all(isinstance(n, int) and n >= 1 for n in c.layers), c, "layers",
            "needs the number of layers (>= 1) of every tier, e.g. [4, 2, 2]")
    require(c.rnn in RNN_TYPES, c, "rnn", f"must be one of {sorted(RNN_TYPES)}")
    require(len(c.input_noise) <= len(c.layers) and all(isinstance(v, (int, float)) and v >= 0
                                                         for v in c.input_noise), c, "input_noise",
            f"needs a noise std >= 0 per tier from tier 1, at most {len(c.layers)} values (e.g. [0.15]: tier 1 only)")
    for name in ("dim", "n_mixtures", "cond_dim", "cond_layers", "batch_size", "fine_every"):
        require(isinstance(getattr(c, name), int) and getattr(c, name) >= 1, c, name, "must be an integer >= 1")
    require(isinstance(c.fine_batch_size, int) and 0 <= c.fine_batch_size <= c.batch_size, c, "fine_batch_size",
            f"must be between 0 (= batch_size) and batch_size ({c.batch_size})")
    require(isinstance(c.fine_clip_frames, int) and 0 <= c.fine_clip_frames <= c.clip_frames, c,
            "fine_clip_frames", f"must be between 0 (= clip_frames) and clip_frames ({c.clip_frames})")
    require(c.scale_floor > 0, c, "scale_floor", "must be > 0")
    require(c.lr > 0, c, "lr", "must be > 0")
    G = len(c.layers)
    require(all(t in range(1, G + 1) for t in c.train_tiers) and len(set(c.train_tiers)) == len(c.train_tiers), c,
            "train_tiers", f"must list distinct tiers among 1..{G} (empty = all)")
    require(c.fine_every == 1 or not c.train_tiers or 1 in c.train_tiers, c, "fine_every",
            "must be 1 when tier 1 is not trained (steps without a trained tier would do nothing)")
    for name, frames in (("clip_frames", c.clip_frames), ("fine_clip_frames", c.fine_clip_frames or c.clip_frames)):
        shapes = tier_shapes(frames, n_mels, G)
        require(min(min(s) for s in shapes) >= 1, c, name,
                f"is too small for {G} tiers of a {n_mels}-mel spectrogram (tier shapes {shapes}); use more frames "
                f"or fewer tiers")


PRESETS: dict[str, MelNetConfig] = {
    # CPU: 1 s clips of 64 mels at 16 kHz, four tiers (16x32, 16x32, 32x32, 32x64), the genre in every
    # tier, Adam at 1e-3: each raised the honest judge's genre accuracy at 800 steps. Not `input_noise=[0.15]`:
    # it gives tier 1 a beat, but the demo swung from 69% to 11% between two seeds (README, "Noise on tier 1's inputs").
    "tiny": MelNetConfig(layers=[4, 2, 2, 2], genre_all_tiers=True, lr=1e-3),
    # Table 1 "MelNet (small)": 4.04M; 8 s clips (221 frames), four tiers.
    "paper-small": MelNetConfig(spec="melnet-paper", clip_frames=221, batch_size=6, dim=64, layers=[12, 6, 5, 4],
                                central=False, cond_dim=32, lr=1e-4),
    # Table 1 "MelNet (large)": 50.8M; 3 s clips (83 frames), four tiers.
    "paper-large": MelNetConfig(spec="melnet-paper", clip_frames=83, batch_size=6, dim=256, layers=[6, 5, 5, 5],
                                central=False, cond_dim=64, lr=1e-4),
}


#: Share of a time budget that tier 1 trains alone (:meth:`MelNetRecipe.budget_sessions`; README, "Tier 1 first").
TIER1_SHARE = 0.5


class MelNetRecipe(Recipe):
    """Multiscale MelNet: modules ``tier1..tierG``, one Adam optimiser per tier.

    ``train_tiers`` may change between sessions of one run (train tier 1, then tier 2, ...): every
    tier keeps its optimiser in the checkpoint whether it is being trained or not.
    """

    name = "melnet"
    schedule_fields = ("train_tiers", "input_noise")
    recurrent = True

    def __init__(self, config: MelNetConfig, spec: SpecParams, genres: list[str]):
        super().__init__(config, spec, genres)
        check(config, spec.n_mels)
        if not genres:
            raise ConfigError("melnet needs at least one genre (the dataset has none)")
        c = config
        self.n_tiers = G = len(c.layers)
        shapes = tier_shapes(c.clip_frames, spec.n_mels, G)
        for g in range(G):
            self.modules[f"tier{g + 1}"] = Tier(
                shapes[g][1], c.dim, c.layers[g], len(self.genres), rnn=c.rnn, central=c.central,
                n_mixtures=c.n_mixtures, scale_floor=c.scale_floor, genre_cond=(g == 0 or c.genre_all_tiers),
                conditional=g > 0, cond_dim=c.cond_dim, cond_layers=c.cond_layers, checkpoint=c.checkpoint,
                input_noise=float(c.input_noise[g]) if g < len(c.input_noise) else 0.0)
        self.train_tiers = sorted(c.train_tiers) or list(range(1, G + 1))
        for g in range(1, G + 1):
            self.optimizers[f"tier{g}"] = torch.optim.Adam(
                self.modules[f"tier{g}"].parameters(), lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

    @classmethod
    def budget_sessions(cls, config: MelNetConfig) -> list[tuple[MelNetConfig, float]]:
        """Tiers are trained apart (each on the real coarser tiers, as MelNet trains them), so a budget is
        spent in two sessions: tier 1 alone for the first :data:`TIER1_SHARE` of it, then the finer tiers
        with tier 1 done. One session when ``train_tiers`` is set or there is one tier."""
        if config.train_tiers or len(config.layers) == 1:
            return [(config, 1.0)]
        finer = tuple(range(2, len(config.layers) + 1))
        return [(replace(config, train_tiers=(1,)), TIER1_SHARE), (replace(config, train_tiers=finer), 1 - TIER1_SHARE)]

    def tiers(self) -> list[Tier]:
        """The raw tier modules (unwrapped from DDP), coarse to fine."""
        return [self.unwrap(self.modules[f"tier{g + 1}"]) for g in range(self.n_tiers)]

    def _check_genre(self, genre: torch.Tensor) -> None:
        """Genre ids given on the CPU are checked there (reading a GPU tensor's values would wait for the GPU)."""
        if genre.device.type != "cpu" or not genre.numel():
            return
        ids = genre.numpy()
        if ids.min() < 0 or ids.max() >= len(self.genres):
            raise ConfigError(f"genre ids must be in 0..{len(self.genres) - 1} ({self.genres}); got {ids.tolist()}")

    # --- training -------------------------------------------------------------------------------
    def tier_loss(self, g: int, tiers: list, contexts: list, genre: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Mean mixture NLL (nats per element) of tier ``g`` (1-based) on the ground-truth split
        ``tiers``/``contexts`` of a batch: the forward half of a training step."""
        module, x = self.modules[f"tier{g}"], tiers[g - 1]
        with ctx.autocast():
            theta = module(x, genre, contexts[g - 1])
        return gmm.nll(self.unwrap(module).mixture(theta), x).mean()

    def train_step(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One step on ``mel (B, n_mels, frames)``: forward, backward and step each trained tier in turn.

        Returns ``{"nll": ..., "nll_tier<g>": ...}`` in nats per element as 0-dim tensors on the
        training device (no host sync; the trainer reads them once per log interval); ``nll`` is
        over the elements of the trained tiers. A non-finite loss is returned, not raised: the
        trainer decides (a skipped fp16 step, or divergence). Tier 1 trains on the whole clips;
        tiers >= 2 on the first ``fine_batch_size`` clips, cut to their first ``fine_clip_frames``
        frames (clips start at random, so the first frames are a random crop too), and only on every
        ``fine_every``-th step (their losses are absent from the other steps).
        """
        whole = split(mel.transpose(1, 2), self.n_tiers)
        b = self.config.fine_batch_size or len(genre)
        coarse, fine = (*whole, genre), (*self._fine_split(mel, whole, b), genre[:b])
        out, total, count = {}, 0.0, 0
        for g in self.train_tiers:
            if g >= 2 and ctx.step % self.config.fine_every:
                continue
            batch = coarse if g == 1 else fine
            loss = self.tier_loss(g, *batch, ctx)
            ctx.backward(loss)
            ctx.optimizer_step(self.optimizers[f"tier{g}"], self.modules[f"tier{g}"].parameters())
            value = loss.detach()
            out[f"nll_tier{g}"] = value
            n = batch[0][g - 1].numel()
            total, count = total + value * n, count + n
        return {"nll": total / count, **out}

    def _fine_split(self, mel: torch.Tensor, whole: tuple, n_clips: int) -> tuple:
        """What tiers >= 2 train and are validated on: the (tiers, contexts) split of the first ``n_clips``
        clips of ``mel (B, n_mels, frames)``, cut to their first ``fine_clip_frames``; ``whole`` (the split
        of all of ``mel``) when nothing is cut."""
        frames = self.config.fine_clip_frames or mel.shape[-1]
        if n_clips == mel.shape[0] and frames == mel.shape[-1]:
            return whole
        return split(mel[:n_clips, :, :frames].transpose(1, 2), self.n_tiers)

    @torch.no_grad()
    def eval_step(self, mel: torch.Tensor, genre: torch.Tensor) -> dict[str, float]:
        """Held-out NLL in nats per element (``nll``), and per tier; each tier on the frames it trains on
        (tier 1 the whole clips, tiers >= 2 their first ``fine_clip_frames``)."""
        whole = split(mel.transpose(1, 2), self.n_tiers)
        fine_tiers, fine_contexts = self._fine_split(mel, whole, len(genre))
        out, total, count = {}, 0.0, 0
        for g, tier in enumerate(self.tiers()):
            x, context = (whole[0][0], None) if g == 0 else (fine_tiers[g], fine_contexts[g])
            value = float(gmm.nll(tier.mixture(tier(x, genre, context)), x).mean())
            out[f"nll_tier{g + 1}"] = value
            total, count = total + value * x.numel(), count + x.numel()
        return {"nll": total / count, **out}

    # --- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, genre: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
               n_frames: int | None = None, prime: torch.Tensor | None = None, naive: bool | str = False,
               progress: bool = False, given: torch.Tensor | None = None, given_tiers: int = 0) -> torch.Tensor:
        """``(B,)`` genre ids -> ``(B, n_mels, n_frames)`` normalised log-mel (cached sampling).

        ``n_frames`` defaults to ``clip_frames`` (plus the prime's length when priming).
        ``temperature`` sharpens the mixture weights and scales the mixture scales (0 = most likely
        component's mean). ``prime (B|1, n_mels, P)`` is a real clip to continue: the result starts
        with it. ``naive=True`` (or ``"element"``) uses the slow exact baseline that re-runs the
        network per element, ``"frame"`` the seed's sampler that re-runs it per frame (benchmarks).
        ``given (B, n_mels, n_frames)``: a real spectrogram whose tiers ``1..given_tiers`` are taken
        instead of sampled, the finer ones sampled on them: which tier falls short
        (``benchmarks/melnet_tier_oracle.py``).
        """
        self._check_genre(genre)
        genre = genre.to(next(self.tiers()[0].parameters()).device)
        if temperature < 0:
            raise ConfigError(f"sampling temperature must be >= 0 (got {temperature})")
        n_mels = self.spec.n_mels
        if prime is not None:
            if prime.dim() != 3 or prime.shape[1] != n_mels or prime.shape[0] not in (1, genre.shape[0]):
                raise ConfigError(f"prime must be (B or 1, {n_mels}, frames) normalised log-mel for {genre.shape[0]} "
                                  f"sample(s); got {tuple(prime.shape)}")
            prime = prime.transpose(1, 2)
        n_prime = 0 if prime is None else prime.shape[1]
        n_frames = n_frames or n_prime + self.config.clip_frames
        if min(min(s) for s in tier_shapes(n_frames, n_mels, self.n_tiers)) < 1 or n_frames < n_prime:
            raise ConfigError(f"n_frames={n_frames} is too short for {self.n_tiers} tiers or the {n_prime}-frame prime")
        fixed = []
        if given_tiers:
            shape = (genre.shape[0], n_mels, n_frames)
            if not 0 <= given_tiers <= self.n_tiers or given is None or tuple(given.shape) != shape:
                raise ConfigError(f"given_tiers must be in 0..{self.n_tiers} with a spectrogram given {shape}; got "
                                  f"{given_tiers} and {None if given is None else tuple(given.shape)}")
            fixed = split(given.transpose(1, 2), self.n_tiers)[0][:given_tiers]
        x = sample_tiers(self.tiers(), genre, n_frames, n_mels, temperature, generator, prime, naive, progress,
                         fixed)
        return x.transpose(1, 2).contiguous()


def gaussian_baseline_nll(train_mel: torch.Tensor, heldout_mel: torch.Tensor, floor: float = 5e-3) -> float:
    """Held-out NLL (nats per element) of one Gaussian per mel bin fitted on the training clips.

    The yardstick for MelNet's held-out NLL: ``train_mel``/``heldout_mel`` are ``(N, n_mels, frames)``
    normalised log-mels; the std has the same floor as MelNet's mixture scales.
    """
    x = train_mel.double().transpose(0, 1).reshape(train_mel.shape[1], -1)
    mean, std = x.mean(1), x.std(1).clamp_min(floor)
    dist = torch.distributions.Normal(mean[None, :, None], std[None, :, None])
    return float(-dist.log_prob(heldout_mel.double()).mean())
