"""cMelGAN: a genre-conditional GAN on Mel spectrograms (paper sections 3.2 and 4.3).

The generator (:mod:`.generator`) maps standard-normal noise times a genre embedding to one
normalised log-mel spectrogram ``(n_mels, clip_frames)``; the discriminator
(:mod:`.discriminator`, with :mod:`.temporal`) scores (spectrogram, genre) pairs; the losses are in
:mod:`.losses`. This file holds the config, the presets and the :class:`CMelGANRecipe` that the
shared trainer drives; it runs past 400 lines because the design decisions below and the config's
checks are kept next to the presets and the training step they shape.

What the paper specifies, and we keep
    noise x genre-embedding input, 2-D transposed-conv upsampling with dilated reflection-padded
    residual stacks, the 1-D fine-tuning stack with increasing kernels (the seed never called it; we
    do, ``use_finetune`` switches it off), weight norm on every generator convolution, a grouped-conv
    discriminator with a linear output, the genre given to the discriminator as an extra input
    channel (``conditioning="concat"`` or ``"both"``), matching-aware training (real spectrograms
    paired with a wrong genre are "fake", Reed et al. 2016), batch 8 and 2 discriminator steps per
    generator step. The original objective is
    reachable as the ``paper-*-original`` presets: ``loss="bce"`` (sigmoid + binary cross-entropy,
    computed on logits for numerical safety), ``conditioning="concat"``, no spectral norm.

What we add, because the seed never converged (paper section 4.3: "either the generator would
quickly approach 0 loss or the discriminator would")
    - Hinge loss (Lim & Ye 2017; SNGAN, SAGAN, BigGAN): the discriminator stops pushing once a
      sample is classified with margin 1, so it cannot drive the generator's gradient to zero the
      way a saturated sigmoid does. ``"lsgan"`` is offered as a third choice.
    - Spectral norm on every discriminator weight (Miyato et al. 2018): bounds the discriminator's
      Lipschitz constant, the most reliable single fix for discriminator overpowering.
    - Projection conditioning (Miyato & Koyama 2018): ``logit = psi(h) + <embed(genre), h>``. It beat
      input concatenation (the paper's choice) clearly on conditional ImageNet, and costs
      ``n_genres x C`` parameters instead of ``n_genres x n_mels x frames``. We *combine* it with the
      paper's matching-aware negatives: the projection term alone only learns genre through the
      fake/real contrast, the wrong-genre reals give it a direct "right spectrogram, wrong label"
      signal, which is what makes samples genre-specific. The discriminator loss averages the two
      negative terms, ``L_D = L_real + (L_fake + L_wrong) / 2`` (Reed et al. 2016), so real and
      negative pairs keep equal weight.
    - Two time-scale update rule (Heusel et al. 2017): ``lr_d > lr_g`` lets the discriminator track the
      generator without extra steps; the paper presets still do ``d_steps=2`` as the paper did. ``tiny``
      trains at 3x the usual 2e-4 / 4e-4 (6e-4 / 1.2e-3): at the demo's ~1,000 CPU steps the honest
      judge's genre accuracy went from 59% (one run) to 85% (mean of five seeds, 68-99%; README; measured
      with the judge of format 3, before it learnt that flickering noise is no genre).
    - A minibatch-standard-deviation channel before the discriminator's last layer (Karras et al.
      2018): the spread of features across a group of 4 samples of one block (real or fake, never
      mixed). A generator that ignores its noise, the collapse seen in our first CPU runs (every
      sample of a genre alike), produces zero spread and is spotted at once.
    - Feature matching (Salimans et al. 2016): the generator also matches the batch-mean of every
      discriminator feature map on fakes to that on reals (L1). Noise and real clips are unpaired, so
      MelGAN's paired L1 does not apply; batch statistics do. Weight ``feature_matching`` (0 = off).
    - EMA of the generator weights (Karras et al. 2018; Yazici et al. 2019), used for sampling and
      validation. The decay is warmed up as ``min(ema_decay, (1 + step) / (10 + step))`` so a short
      run's samples are not dominated by the random initial weights (at the demo's ~1,000 steps it
      averages over ~110 steps). Sampling the raw generator instead (``ema_decay=0``) was measured
      over six seeds there and lost: 83% against 87% by the honest judge (format 3), with a wider
      spread (README).
    - Temporal discriminators (:mod:`.temporal`; ``d_temporal_scales``, on in ``tiny``): 1-D
      convolutions along time over whole frames at several time scales, MelGAN's multi-scale idea
      turned along the time axis. The 2-D discriminator judges local patches and can be pleased by
      the right texture with no rhythm; these hear onsets and bars.
    - No R1 penalty: it needs a double backward through the (DDP-wrapped) discriminator; spectral
      norm plus hinge loss already keeps the discriminator in check.

One optimisation step (:meth:`CMelGANRecipe.train_step`)
    ``d_steps`` discriminator updates, each on the *same* real batch (the loader gives one batch per
    trainer step) with fresh noise and freshly drawn wrong genres, then one generator update on the
    fakes the last discriminator update judged (made once, with their graph: one generator forward
    pass per step saved). Every call of a (possibly DDP-wrapped) module sees one concatenated batch,
    ``[real, fake, real]`` with genres ``[g, g, wrong(g)]`` for the discriminator, ``[fake, real]`` for
    the generator step when feature matching is on, so each module runs at most once per backward.
    Discriminator gradients left over from the generator step are cleared before each discriminator
    update (:meth:`~nmusic.models.base.StepContext.optimizer_step` updates the fp16 grad scaler after every
    optimiser step, so repeated discriminator steps are safe).

Validation (:meth:`CMelGANRecipe.eval_step`): ``stat_distance``, the mean over the genres in the batch
of ``|mean_real - mean_fake| + |std_real - std_fake|`` per mel bin (averaged over bins), with
statistics over clips and frames and fakes from the EMA generator with fixed noise. It is logged to
watch training, and nothing more: per-bin Gaussian noise with the right mean and spread would win
it, so it does not pick a "best" checkpoint (``selects_best = False``); generation and evaluation use
the latest checkpoint, and :mod:`nmusic.evaluation.evaluate` judges the audio.

Shapes: spectrograms ``(B, n_mels, clip_frames)`` normalised log-mel in [-1, 1]; genres ``(B,)`` int64.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass

import torch

from ...config import require, tuples_from_lists
from ...errors import ConfigError
from ...frontend import SPEC_PRESETS, SpecParams
from ..base import Recipe, StepContext
from .discriminator import Discriminator
from .generator import Generator
from .losses import d_loss_terms, feature_matching_loss, g_adv_loss, stat_distance

LOSSES = ("hinge", "bce", "lsgan")
CONDITIONINGS = ("projection", "concat", "both")


@dataclass
class CMelGANConfig:
    """Everything that defines a cMelGAN run's model and optimiser. The defaults are the ``tiny``
    preset (CPU, spec ``default``: 64 mels x 128 frames = 2 s at 16 kHz) without its temporal
    discriminators, time latent and learning rates. See :data:`PRESETS`."""

    # data
    spec: str = "default"                      # name in nmusic.frontend.SPEC_PRESETS
    clip_frames: int = 128                     # frames per training clip (T)
    batch_size: int = 8
    # generator
    z_dim: int = 32
    g_channels: tuple[int, ...] = (64, 32, 16, 8, 8)    # linear output, then one per upsampling layer
    upsample_factors: tuple[int, ...] = (2, 2, 2, 2)   # per layer, both axes; start = ceil(size / prod)
    finetune_kernels: tuple[int, ...] = (3, 9, 27)     # 1-D fine-tuning stack, increasing
    use_finetune: bool = True
    res_dilations: tuple[int, ...] = (1, 3, 9)
    time_latent: bool = False                  # noise sequence along the latent time axis: clips of any length
    crop_extra: float = 0.5                    # time_latent: fakes up to (1 + this) x the clip, randomly cropped
    # discriminator
    d_channels: tuple[int, ...] = (32, 64, 128, 128)
    d_kernels: tuple[int, ...] = (5, 5, 5, 3)
    d_strides: tuple[int, ...] = (2, 2, 2, 2)
    d_groups: tuple[int, ...] = (1, 4, 8, 1)
    d_minibatch_std: int = 4                   # group size of the minibatch-std channel (0 = off)
    d_temporal_scales: tuple[int, ...] = ()    # temporal discriminators over whole frames, time pooled by each
    d_temporal_channels: int = 128
    spectral_norm: bool = True
    # objective
    loss: str = "hinge"                        # "hinge" | "bce" (the paper) | "lsgan"
    conditioning: str = "projection"           # "projection" | "concat" (the paper) | "both"
    matching_aware: bool = True                # real + wrong genre counts as fake (the paper)
    feature_matching: float = 1.0              # weight of the feature-matching term (0 = off)
    # optimisation
    lr_g: float = 2e-4
    lr_d: float = 4e-4
    betas: tuple[float, ...] = (0.5, 0.9)
    d_steps: int = 1                           # discriminator updates per generator update
    ema_decay: float = 0.995                   # 0 = sample from the raw generator
    leaky: float = 0.2

    def __post_init__(self):
        tuples_from_lists(self)
        require(self.spec in SPEC_PRESETS, self, "spec", f"must be a spectrogram preset: one of {sorted(SPEC_PRESETS)}")
        check_geometry(self, SPEC_PRESETS[self.spec].n_mels)


def _ints(values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def check_geometry(c: CMelGANConfig, n_mels: int) -> None:
    """Raise :class:`ConfigError` naming the field when ``c`` cannot build a model for ``n_mels`` bins."""
    T = c.clip_frames
    require(isinstance(T, int) and T >= 8, c, "clip_frames", "must be an integer >= 8")
    require(isinstance(c.batch_size, int) and c.batch_size >= 1, c, "batch_size", "must be an integer >= 1")
    require(isinstance(c.z_dim, int) and c.z_dim >= 1, c, "z_dim", "must be an integer >= 1")
    # generator
    f = c.upsample_factors
    require(len(f) >= 1 and _ints(f) and all(2 <= x <= 8 for x in f), c, "upsample_factors",
            "must be a non-empty list of integers in 2..8")
    P = math.prod(f)
    require(P <= min(n_mels, T), c, "upsample_factors",
            f"they multiply to {P}, more than n_mels={n_mels} or clip_frames={T}; use fewer or smaller "
            "factors (the first feature map is ceil(n_mels / product) x ceil(clip_frames / product))")
    require(len(c.g_channels) == len(f) + 1 and _ints(c.g_channels) and min(c.g_channels) >= 1, c, "g_channels",
            f"needs len(upsample_factors) + 1 = {len(f) + 1} positive integers (linear output, then one per "
            f"upsampling layer)")
    require(isinstance(c.time_latent, bool), c, "time_latent", "must be true or false")
    require(0 <= c.crop_extra <= 4, c, "crop_extra",
            "must be in [0, 4] (extra latent columns, as a fraction of the clip's)")
    require(len(c.res_dilations) >= 1 and _ints(c.res_dilations) and min(c.res_dilations) >= 1, c, "res_dilations",
            "must be a non-empty list of integers >= 1")
    k = c.finetune_kernels
    if c.use_finetune:
        require(len(k) >= 1 and _ints(k) and min(k) >= 1, c, "finetune_kernels",
                "must be a non-empty list of integers >= 1 when use_finetune is on")
        require(list(k) == sorted(k), c, "finetune_kernels", "must be increasing (the paper)")
        require(max(k) // 2 < T, c, "finetune_kernels", f"largest kernel {max(k)} is too long for clip_frames={T}")
    # discriminator
    n = len(c.d_channels)
    require(n >= 1 and _ints(c.d_channels) and min(c.d_channels) >= 1, c, "d_channels",
            "must be a non-empty list of positive integers")
    for name in ("d_kernels", "d_strides", "d_groups"):
        v = getattr(c, name)
        require(len(v) == n and _ints(v) and min(v) >= 1, c, name,
                f"needs {n} positive integers (one per d_channels entry)")
    require(all(x % 2 == 1 for x in c.d_kernels), c, "d_kernels", "must be odd")
    c_in = 2 if c.conditioning in ("concat", "both") else 1
    h, w = n_mels, T
    for i, (ch, g, s, ker) in enumerate(zip(c.d_channels, c.d_groups, c.d_strides, c.d_kernels)):
        require(c_in % g == 0 and ch % g == 0, c, "d_groups",
                f"layer {i}: groups={g} must divide its input ({c_in}) and output ({ch}) channels")
        h, w = (h - 1) // s + 1, (w - 1) // s + 1
        c_in = ch
    require(h >= 1 and w >= 1, c, "d_strides", "the discriminator downsamples below one pixel")
    require(isinstance(c.d_minibatch_std, int) and c.d_minibatch_std >= 0, c, "d_minibatch_std",
            "must be an integer >= 0 (0 = off)")
    require(_ints(c.d_temporal_scales) and all(s >= 1 and T // s >= 8 for s in c.d_temporal_scales), c,
            "d_temporal_scales", f"must be integers >= 1 that leave at least 8 pooled frames of clip_frames={T}")
    require(isinstance(c.d_temporal_channels, int) and c.d_temporal_channels >= 1, c, "d_temporal_channels",
            "must be an integer >= 1")
    require(not c.d_minibatch_std or c.d_groups[-1] == 1, c, "d_groups",
            "the last layer must have groups=1 when d_minibatch_std is on (it gets one extra input channel)")
    # objective and optimiser
    require(c.loss in LOSSES, c, "loss", f"must be one of {LOSSES}")
    require(c.conditioning in CONDITIONINGS, c, "conditioning", f"must be one of {CONDITIONINGS}")
    require(c.feature_matching >= 0, c, "feature_matching", "must be >= 0")
    require(c.lr_g > 0, c, "lr_g", "must be > 0")
    require(c.lr_d > 0, c, "lr_d", "must be > 0")
    require(len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas), c, "betas", "needs two values in [0, 1)")
    require(isinstance(c.d_steps, int) and c.d_steps >= 1, c, "d_steps", "must be an integer >= 1")
    require(0 <= c.ema_decay < 1, c, "ema_decay", "must be in [0, 1)")
    require(0 <= c.leaky < 1, c, "leaky", "must be in [0, 1)")


def _paper(**kw) -> CMelGANConfig:
    # 256 mels x 256 frames (10 s at 22050 Hz, hop 862), batch 8, 2 D steps per G step (the paper);
    # TTUR 1e-4 / 4e-4 as in SAGAN, the betas the tiny preset was tuned with.
    base = dict(spec="cmelgan-paper", clip_frames=256, batch_size=8, d_steps=2, lr_g=1e-4, lr_d=4e-4,
                betas=(0.5, 0.9), ema_decay=0.999, feature_matching=1.0)
    return CMelGANConfig(**{**base, **kw})


# The paper's Table 1 counts (15.3M small, 25.2M large) are read as generator + discriminator
# trainable parameters (weight-norm g and v both counted; the EMA copy is not a trainable model).
_SMALL = dict(z_dim=128, g_channels=(256, 256, 128, 64, 32, 16), upsample_factors=(2, 2, 2, 2, 2),
              finetune_kernels=(3, 7, 15), d_channels=(32, 64, 128, 256, 512, 512),
              d_kernels=(7, 11, 11, 11, 11, 3), d_strides=(1, 2, 2, 2, 2, 2), d_groups=(1, 4, 4, 4, 16, 1))
_LARGE = dict(z_dim=128, g_channels=(256, 384, 192, 96, 48, 24), upsample_factors=(2, 2, 2, 2, 2),
              finetune_kernels=(3, 7, 15, 31), d_channels=(32, 64, 128, 256, 512, 1024),
              d_kernels=(7, 11, 11, 11, 11, 3), d_strides=(1, 2, 2, 2, 2, 2), d_groups=(1, 4, 4, 4, 16, 1))
_ORIGINAL = dict(loss="bce", conditioning="concat", matching_aware=True, spectral_norm=False,
                 d_minibatch_std=0, feature_matching=0.0, ema_decay=0.0, lr_g=1e-4, lr_d=1e-4, betas=(0.5, 0.999))

#: ``tiny``: CPU demo size, with temporal discriminators at 1x, 2x and 4x frame pooling (with them the
#: honest judge's genre accuracy rose from 79% to 91% at 4,000 steps, see README) and Adam at 3x the
#: usual rates (59% -> 85% at the demo's ~1,000 steps; both by the judge of format 3); ``paper-small`` /
#: ``paper-large``: Table 1 sizes (and parameter counts, so without temporal discriminators: add them
#: with ``--set d_temporal_scales=[1,2,4]``) with the stabilised
#: objective; ``*-original``: the same networks trained with the paper's own objective (BCE, concat
#: conditioning, matching-aware, no spectral norm / minibatch std / feature matching / EMA) and the
#: paper's generator input. ``tiny`` has ``time_latent``, a noise sequence along time: clips of any
#: length (see :mod:`.generator`); the paper presets keep the paper's one noise vector per clip (and so
#: Table 1's counts: the per-column linear layer is 1.8M parameters smaller) and make clips of their
#: training length or shorter; ``--set time_latent=true`` gives them any length too.
PRESETS: dict[str, CMelGANConfig] = {
    "tiny": CMelGANConfig(d_temporal_scales=(1, 2, 4), time_latent=True, lr_g=6e-4, lr_d=1.2e-3),
    "tiny-original": CMelGANConfig(**_ORIGINAL, d_steps=2),
    "paper-small": _paper(**_SMALL),
    "paper-large": _paper(**_LARGE),
    "paper-small-original": _paper(**_SMALL, **_ORIGINAL),
    "paper-large-original": _paper(**_LARGE, **_ORIGINAL),
}


# --- recipe -----------------------------------------------------------------------------------------
class CMelGANRecipe(Recipe):
    """Modules ``generator``, ``discriminator`` (trained) and ``generator_ema`` (no grad, for sampling);
    optimisers ``generator`` and ``discriminator`` (Adam)."""

    name = "cmelgan"
    selects_best = False  # stat_distance is watched, not trusted: the latest checkpoint is used

    def __init__(self, config: CMelGANConfig, spec: SpecParams, genres: list[str]):
        super().__init__(config, spec, genres)
        c = config
        if not genres:
            raise ConfigError("cmelgan needs at least one genre (the dataset has none)")
        check_geometry(c, spec.n_mels)
        n_genres, F_, T = len(self.genres), spec.n_mels, c.clip_frames
        G = Generator(n_genres, F_, T, c.z_dim, c.g_channels, c.upsample_factors, c.finetune_kernels,
                      c.use_finetune, c.res_dilations, c.leaky, c.time_latent)
        D = Discriminator(n_genres, F_, T, c.d_channels, c.d_kernels, c.d_strides, c.d_groups,
                          c.conditioning, c.spectral_norm, c.leaky, c.d_minibatch_std, c.d_temporal_scales,
                          c.d_temporal_channels)
        ema = copy.deepcopy(G).requires_grad_(False).eval()
        self.modules = {"generator": G, "discriminator": D, "generator_ema": ema}
        self.optimizers = {
            "generator": torch.optim.Adam(G.parameters(), lr=c.lr_g, betas=c.betas),
            "discriminator": torch.optim.Adam(D.parameters(), lr=c.lr_d, betas=c.betas),
        }
        self.ema_updates = 0  # generator updates averaged into generator_ema so far (checkpointed)

    # --- helpers --------------------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None,
              temperature: float = 1.0, columns: int | None = None) -> torch.Tensor:
        """Standard-normal noise on the model's device: ``(n, z_dim)``, or with ``time_latent`` a sequence
        ``(n, z_dim, columns)`` (default: the training clip's columns); ``truncation`` resamples entries
        with ``|z| > truncation`` (BigGAN's truncation trick), ``temperature`` scales it. A sequence is
        drawn column by column, so with one seed a longer clip starts with the shorter one's noise."""
        gen_device = generator.device if generator is not None else self._device()
        G = self.unwrap(self.modules["generator"])
        shape = (n, columns or G.columns, self.config.z_dim) if self.config.time_latent else (n, self.config.z_dim)
        z = torch.randn(shape, generator=generator, device=gen_device)
        if truncation is not None:
            if truncation <= 0:
                raise ConfigError(f"sample: truncation must be > 0, got {truncation}")
            for _ in range(100):
                bad = z.abs() > truncation
                if not bad.any():
                    break
                z = torch.where(bad, torch.randn(z.shape, generator=generator, device=gen_device), z)
            z = z.clamp(-truncation, truncation)
        z = z.transpose(1, 2) if z.dim() == 3 else z
        return (z * temperature).to(self._device())

    def fakes(self, G, genre: torch.Tensor) -> torch.Tensor:
        """Generated training clips ``(B, n_mels, clip_frames)`` from fresh noise. With ``time_latent``: one
        output of the clip's latent columns plus a random number of extra ones (up to ``crop_extra`` of
        them), cropped at a random frame per clip, so the discriminator also judges the inside of
        longer outputs (what a long clip is made of) and the generator cannot lean on the edges."""
        c, B = self.config, genre.shape[0]
        if not c.time_latent:
            return G(self.noise(B), genre)
        base = self.unwrap(self.modules["generator"]).columns
        columns = base + random.randint(0, int(c.crop_extra * base))       # Python's RNG: no tensor on the host
        out = G(self.noise(B, columns=columns), genre)                      # (B, F, columns * hop)
        T = c.clip_frames
        start = torch.randint(0, out.shape[-1] - T + 1, (B, 1), device=out.device)
        index = (start + torch.arange(T, device=out.device))[:, None, :].expand(-1, out.shape[1], -1)
        return out.gather(2, index)

    def wrong_genres(self, genre: torch.Tensor) -> torch.Tensor:
        """A uniformly drawn genre different from each entry of ``genre`` (needs >= 2 genres)."""
        n = len(self.genres)
        return (genre + torch.randint(1, n, genre.shape, device=genre.device)) % n

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- decay * ema + (1 - decay) * generator``, decay warmed up over the first updates."""
        step = self.ema_updates
        self.ema_updates += 1
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        G, ema = self.unwrap(self.modules["generator"]), self.modules["generator_ema"]
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in G.parameters()], 1 - decay)
        buffers = list(ema.buffers())
        if buffers:                            # none in the presets' generators; copied, not averaged
            torch._foreach_copy_(buffers, list(G.buffers()))

    # --- training -------------------------------------------------------------------------------
    def discriminator_loss(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext,
                           fake: torch.Tensor | None = None) -> dict:
        """The forward half of one discriminator update: loss terms (``d_loss`` is the one to minimise)
        and the mean logits, as tensors. ``fake``: generated clips to judge (detached here); default
        fresh ones from fresh noise. Freshly drawn wrong genres."""
        c, B = self.config, mel.shape[0]
        G, D = self.modules["generator"], self.modules["discriminator"]
        aware = c.matching_aware and len(self.genres) > 1
        if fake is None:
            with torch.no_grad(), ctx.autocast():
                fake = self.fakes(G, genre)
        x, y = [mel, fake.detach().to(mel.dtype)], [genre, genre]
        if aware:
            x.append(mel)
            y.append(self.wrong_genres(genre))
        with ctx.autocast():   # block 2 repeats block 0's spectrograms: D scores them once
            logits = D(torch.cat(x), torch.cat(y), segment=B, repeats={2: 0} if aware else None).float()
        parts = logits.split(B)
        terms = d_loss_terms(c.loss, *parts)
        terms.update(d_real=parts[0].mean(), d_fake=parts[1].mean())
        if aware:
            terms["d_wrong"] = parts[2].mean()
        return terms

    def generator_loss(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext,
                       fake: torch.Tensor | None = None) -> dict:
        """The forward half of the generator update: ``g_loss`` (to minimise), its adversarial part,
        the feature-matching term (when on) and the discriminator's mean logit on the fakes.
        ``fake``: generated clips with their graph (default: fresh ones)."""
        c, B = self.config, mel.shape[0]
        G, D = self.modules["generator"], self.modules["discriminator"]
        with ctx.autocast():
            if fake is None:
                fake = self.fakes(G, genre)
            if c.feature_matching > 0:
                logits, feats = D(torch.cat([fake, mel.to(fake.dtype)]), torch.cat([genre, genre]),
                                  features=True, segment=B)
                logits = logits[:B]
                fm = feature_matching_loss([f[:B] for f in feats], [f[B:] for f in feats])
            else:
                logits, fm = D(fake, genre), None
        g_adv = g_adv_loss(c.loss, logits.float())
        terms = {"g_loss": g_adv + c.feature_matching * fm if fm is not None else g_adv, "g_adv": g_adv,
                 "d_fake_g": logits.detach().float().mean()}
        if fm is not None:
            terms["g_fm"] = fm
        return terms

    def train_step(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``d_steps`` discriminator updates, then one generator update and the EMA. Returns the losses
        of the last discriminator update and of the generator update as detached 0-dim tensors on
        the training device: nothing here waits for the GPU (the trainer reads them once per log
        interval)."""
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        G, D = self.modules["generator"], self.modules["discriminator"]
        # The generator update's fakes are made once, with their graph, before the last discriminator
        # update, which judges them detached: one generator forward pass per step saved (~15% of a
        # `tiny` step on a CPU). The generator is the same in both, so this changes nothing in expectation.
        fake = None
        for i in range(self.config.d_steps):
            if i == self.config.d_steps - 1:
                with ctx.autocast():
                    fake = self.fakes(G, genre)
            opt_d.zero_grad(set_to_none=True)          # drop D grads left over from the generator step
            d_terms = self.discriminator_loss(mel, genre, ctx, fake)
            ctx.backward(d_terms["d_loss"])
            ctx.optimizer_step(opt_d, D.parameters())

        opt_g.zero_grad(set_to_none=True)
        with self.frozen(D):
            g_terms = self.generator_loss(mel, genre, ctx, fake)
            ctx.backward(g_terms["g_loss"])
        ctx.optimizer_step(opt_g, G.parameters())
        self.update_ema()
        return {k: v.detach() for k, v in {**d_terms, **g_terms}.items()}

    @torch.no_grad()
    def eval_step(self, mel: torch.Tensor, genre: torch.Tensor) -> dict[str, float]:
        """``stat_distance`` (lower is better) of EMA-generator samples with fixed noise vs ``mel``."""
        fake = self.sample(genre, generator=torch.Generator().manual_seed(1234))
        return stat_distance(mel, fake, genre)

    def frames_valid(self, n_frames: int) -> int:
        """The number of frames the generator makes for a request of ``n_frames`` (then trimmed to
        ``n_frames``); :class:`ConfigError` when this generator cannot make that many."""
        c, G = self.config, self.unwrap(self.modules["generator"])
        if not isinstance(n_frames, int) or n_frames < 1:
            raise ConfigError(f"n_frames must be a positive integer (got {n_frames!r})")
        if not c.time_latent:
            if n_frames > c.clip_frames:
                raise ConfigError(f"this cMelGAN makes clips of {c.clip_frames} frames "
                                  f"({self.spec.seconds(c.clip_frames):.2f} s) at most: it was trained with one noise "
                                  f"vector per clip (time_latent off); ask for that length or less, or train a "
                                  f"run with --set time_latent=true")
            return c.clip_frames
        return max(G.columns, math.ceil(n_frames / G.hop)) * G.hop

    @torch.no_grad()
    def sample(self, genre: torch.Tensor, generator: torch.Generator | None = None, truncation: float | None = None,
               temperature: float = 1.0, use_ema: bool = True, n_frames: int | None = None) -> torch.Tensor:
        """``(B,)`` genre ids, or ``(B, n_genres)`` weights of a blend -> ``(B, n_mels, n_frames)`` in
        [-1, 1] from the EMA generator. ``n_frames`` (default ``clip_frames``) is rounded up to what
        the generator makes (:meth:`frames_valid`) and the result trimmed to it."""
        G = self.modules["generator_ema"] if use_ema else self.unwrap(self.modules["generator"])
        n_frames = n_frames or self.config.clip_frames
        made = self.frames_valid(n_frames)
        genre = genre.to(self._device())
        columns = made // G.hop if self.config.time_latent else None
        return G(self.noise(len(genre), generator, truncation, temperature, columns), genre)[..., :n_frames].float()

    def extra_state(self) -> dict:
        return {"ema_updates": self.ema_updates}

    def load_extra_state(self, state: dict) -> None:
        self.ema_updates = int(state.get("ema_updates", 0))
