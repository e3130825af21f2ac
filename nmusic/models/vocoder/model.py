"""A GAN vocoder from the project's normalised log-mel to waveform (the paper's future work: "a neural
vocoder would likely greatly enhance results"), trained here on the user's own audio cache.

Why this architecture
    Vocos (Siuzdak 2023): a ConvNeXt backbone at *frame* rate predicts, per STFT bin, a log-magnitude and
    a phase, and one inverse STFT with the front end's own ``n_fft``/``hop_length`` makes the waveform.
    HiFi-GAN and MelGAN upsample to sample rate with transposed convolutions, so most of their compute
    runs ``hop_length`` (256) times per frame; Vocos runs every layer once per frame, which makes it the
    cheapest well-tested neural vocoder on a CPU (its paper reports an order of magnitude over HiFi-GAN's
    CPU speed) and lets a ``tiny`` model train on two CPU cores. The iSTFT head also makes chunked
    inversion exact: one output sample depends on a fixed, small number of frames
    (:attr:`~.networks.VocosGenerator.context_frames`). HiFi-GAN V2 (0.92M parameters) was the other
    cheap option; its transposed-convolution stack runs its last layers at sample rate.
    Two priors make the ``tiny`` model useful within minutes (:class:`~.networks.VocosGenerator`): the
    magnitude is a learned correction of the mel's least-squares inverse (FreeV), and the phase is
    added to each bin's phase-vocoder advance (``magnitude_prior``, ``phase_prior``). Measured on the
    embedded dataset after 2,040 CPU steps (README): without the phase prior, 1,600 steps reached
    what 400 steps reach with it.

Why the ``vocos`` package
    It installs beside our torch without changing it, importing it fetches nothing (its pretrained
    weights are only downloaded by ``Vocos.from_pretrained``, which we never call), and its modules are
    plain ``nn.Module``\\ s: ``VocosBackbone``, ``ISTFTHead``, HiFi-GAN's ``DiscriminatorP`` and DAC's
    multi-band ``DiscriminatorR``, and the hinge / feature-matching losses. Its own training script
    (PyTorch Lightning 1.8) is not used: our trainer gives exact resume, atomic checkpoints, AMP, DDP,
    time budgets and live losses.

Objective (:meth:`VocoderRecipe.train_step`)
    ``mel_weight * L1(log-mel of the output, log-mel of the real clip)`` (the one front end re-analyses
    the output) ``+ stft_weight * (spectral convergence + log-magnitude L1)`` at the STFT sizes
    ``stft_fft_sizes`` (Parallel WaveGAN's multi-resolution STFT loss). From step ``gan_start`` on, hinge
    GAN losses of multi-period (``periods``, HiFi-GAN) and multi-resolution (``mrd_fft_sizes``, DAC/Vocos)
    discriminators and feature matching (``fm_weight``) are added. The reconstruction losses do most of the
    work early, and the discriminators are expensive on a CPU, so the ``tiny`` presets start the GAN after
    a warm-up; ``base`` runs it for hours on a GPU.

Validation (:meth:`VocoderRecipe.eval_step`): ``mel_l1``, the mean absolute difference of normalised
log-mel between the held-out clips and their re-synthesis (re-analysed by the same front end). It picks
``best.pt``.

Inversion (:meth:`VocoderRecipe.vocode`): batched, in chunks of ``chunk_frames`` frames with
``context_frames`` of real context on each side, so minutes of audio never need more memory than one
batch of chunks, and the result equals the unchunked one (no seams, :func:`chunked_frames`).

Shapes: mel ``(B, n_mels, frames)`` in [-1, 1]; waveform ``(B, (frames - 1) * hop_length)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import require, tuples_from_lists
from ...errors import ConfigError
from ...frontend import SPEC_PRESETS, MelFrontEnd, SpecParams
from ..base import Recipe, StepContext
from .networks import VocosGenerator, WaveDiscriminators, gan_losses, multi_resolution_stft_loss


@dataclass
class VocoderConfig:
    """A vocoder's model, objective and optimiser; the defaults are the ``tiny`` preset (see :data:`PRESETS`)."""

    spec: str = "default"                      # name in nmusic.frontend.SPEC_PRESETS: the mels it inverts
    clip_frames: int = 32                      # frames per training clip
    batch_size: int = 8
    # generator (Vocos)
    dim: int = 128
    intermediate_dim: int = 384
    num_layers: int = 4
    magnitude_prior: bool = True               # start from the mel's pseudo-inverse magnitude (FreeV)
    phase_prior: bool = True                   # add each bin's phase-vocoder advance to the predicted phase
    # objective
    mel_weight: float = 45.0
    stft_weight: float = 15.0
    stft_fft_sizes: tuple[int, ...] = (256, 512, 1024, 2048)
    gan_start: int = 3000                      # step the GAN losses start at (warm-up on reconstruction)
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    periods: tuple[int, ...] = ()              # multi-period discriminators (HiFi-GAN: 2, 3, 5, 7, 11)
    mrd_fft_sizes: tuple[int, ...] = (512, 1024, 2048)  # multi-resolution discriminators
    mrd_channels: int = 16
    # optimisation
    lr: float = 5e-4
    betas: tuple[float, ...] = (0.8, 0.9)
    # inversion
    chunk_frames: int = 1024                   # frames per chunk when inverting long audio

    def __post_init__(self):
        tuples_from_lists(self)
        require(self.spec in SPEC_PRESETS, self, "spec", f"must be a spectrogram preset: one of {sorted(SPEC_PRESETS)}")
        check_config(self, SPEC_PRESETS[self.spec])


def _pos_int(c, name: str, low: int = 1) -> None:
    v = getattr(c, name)
    require(isinstance(v, int) and not isinstance(v, bool) and v >= low, c, name, f"must be an integer >= {low}")


def check_config(c: VocoderConfig, spec: SpecParams) -> None:
    """Raise :class:`ConfigError` naming the field when ``c`` cannot build a vocoder for ``spec``."""
    for name, low in (("clip_frames", 8), ("batch_size", 1), ("dim", 1), ("intermediate_dim", 1), ("num_layers", 1),
                      ("gan_start", 0), ("mrd_channels", 1), ("chunk_frames", 8)):
        _pos_int(c, name, low)
    clip = spec.samples(c.clip_frames)
    for name in ("stft_fft_sizes", "mrd_fft_sizes"):
        v = getattr(c, name)
        require(all(isinstance(n, int) and n >= 16 and n & (n - 1) == 0 and n // 2 < clip for n in v), c, name,
                f"must be powers of two >= 16 and below twice a clip's {clip} samples")
    require(len(c.stft_fft_sizes) >= 1, c, "stft_fft_sizes", "needs at least one STFT size")
    require(all(isinstance(p, int) and 2 <= p < clip for p in c.periods), c, "periods", "must be integers >= 2")
    for name in ("mel_weight", "stft_weight", "adv_weight", "fm_weight"):
        require(getattr(c, name) >= 0, c, name, "must be >= 0")
    require(c.mel_weight + c.stft_weight > 0, c, "mel_weight", "mel_weight + stft_weight must be > 0")
    require(c.lr > 0, c, "lr", "must be > 0")
    require(len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas), c, "betas", "needs two values in [0, 1)")


def _for(spec: str, **kw) -> VocoderConfig:
    """A preset for the spectrogram preset ``spec``: its STFT sizes follow the spectrogram's ``n_fft``."""
    n = SPEC_PRESETS[spec].n_fft
    sizes = dict(stft_fft_sizes=(n // 4, n // 2, n, 2 * n), mrd_fft_sizes=(n // 2, n, 2 * n))
    return VocoderConfig(**{"spec": spec, **sizes, **kw})


_TINY = dict(dim=128, intermediate_dim=384, num_layers=4, batch_size=8, gan_start=3000, periods=(), mrd_channels=16)
# Vocos' own size (dim 512, 8 blocks, 13.5M generator parameters), HiFi-GAN's five period discriminators
# and three multi-band resolution discriminators of 32 channels: a Colab GPU run of hours.
_BASE = dict(dim=512, intermediate_dim=1536, num_layers=8, batch_size=16, gan_start=2000, periods=(2, 3, 5, 7, 11),
             mrd_channels=32)

#: ``tiny`` (2 CPU cores; the GAN starts after 3,000 reconstruction steps) and ``base`` (a GPU) for the
#: default 16 kHz / 64-mel spectrogram, and the same for the ``melnet-paper`` and ``cmelgan-paper``
#: spectrograms (22.05 kHz; their hops of 800 and 862 samples make clips of 24 frames ~0.9 s).
PRESETS: dict[str, VocoderConfig] = {
    "tiny": _for("default", clip_frames=32, **_TINY),
    "base": _for("default", clip_frames=64, **_BASE),
    "tiny-melnet-paper": _for("melnet-paper", clip_frames=24, **_TINY),
    "base-melnet-paper": _for("melnet-paper", clip_frames=24, **_BASE),
    "tiny-cmelgan-paper": _for("cmelgan-paper", clip_frames=24, **_TINY),
    "base-cmelgan-paper": _for("cmelgan-paper", clip_frames=24, **_BASE),
}


# --- chunked inversion ----------------------------------------------------------------------------------
def chunk_windows(n_frames: int, chunk: int, context: int) -> list[tuple[int, int, int, int]]:
    """``(window_start, window_end, keep_start, keep_end)`` frame ranges: every window has the same length
    ``min(n_frames, chunk + 2 * context)`` (so windows batch), holds at least ``context`` real frames on each
    side of what it keeps (fewer only at the ends of the signal, where the whole signal has no more
    either), and the kept ranges tile ``[0, n_frames)``."""
    length = min(n_frames, chunk + 2 * context)
    out = []
    for s in range(0, n_frames, chunk):
        e = min(s + chunk, n_frames)
        ws = min(max(s - context, 0), n_frames - length)
        out.append((ws, ws + length, s, e))
    return out


def chunked_frames(fn, mel: torch.Tensor, hop: int, chunk: int, context: int, batch: int) -> torch.Tensor:
    """``fn`` (mel ``(b, n_mels, f)``, first frames ``(b,)`` -> wave ``(b, (f-1)*hop)``) over ``mel`` ``(B, n_mels, frames)`` in windows
    of :func:`chunk_windows`, ``batch`` windows per call, stitched to ``(B, (frames-1)*hop)``.

    Kept frames ``[s, e)`` give samples ``[s*hop, e*hop)`` (the last chunk ends at ``(frames-1)*hop``); with
    ``context`` at least the generator's receptive half-width they equal what ``fn`` gives on the whole."""
    B, _, n = mel.shape
    wins = chunk_windows(n, chunk, context)
    if len(wins) == 1 and B <= batch:
        return fn(mel, 0)
    total = (n - 1) * hop
    jobs = [(b, w) for b in range(B) for w in wins]
    out = None
    for i in range(0, len(jobs), batch):
        part = jobs[i:i + batch]
        wave = fn(torch.stack([mel[b, :, w[0]:w[1]] for b, w in part]), torch.tensor([w[0] for _, w in part]))
        if out is None:
            out = torch.zeros(B, total, dtype=wave.dtype, device=wave.device)
        for (b, (ws, _, s, e)), y in zip(part, wave):
            lo, hi = s * hop, min(e * hop, total, ws * hop + y.shape[-1])
            out[b, lo:hi] = y[lo - ws * hop:hi - ws * hop]
    return out


# --- recipe -----------------------------------------------------------------------------------------------
class VocoderRecipe(Recipe):
    """Modules ``generator`` (the vocoder) and ``discriminator`` (used from ``gan_start`` on); optimisers of
    the same names (AdamW). Needs the real waveform of each batch: the trainer hands it over as
    ``ctx.extras["wave"]``."""

    name = "vocoder"
    selects_best = True      # held-out mel L1 after re-synthesis is a reconstruction measure

    def __init__(self, config: VocoderConfig, spec: SpecParams, genres: list[str]):
        super().__init__(config, spec, genres)
        c = config
        if SPEC_PRESETS[c.spec] != spec:
            raise ConfigError(f"VocoderConfig.spec is {c.spec!r} but the recipe was given other spectrogram "
                              f"parameters; build it with nmusic.frontend.spec_preset(config.spec)")
        self.front_end = MelFrontEnd(spec)      # the loss's front end; with magnitude_prior also the generator's
        G = VocosGenerator(spec.n_mels, spec.n_fft, spec.hop_length, c.dim, c.intermediate_dim, c.num_layers,
                           self.front_end if c.magnitude_prior else None, c.phase_prior)
        D = WaveDiscriminators(c.periods, c.mrd_fft_sizes, c.mrd_channels)
        self.modules = {"generator": G, "discriminator": D}
        self.optimizers = {"generator": torch.optim.AdamW(G.parameters(), lr=c.lr, betas=c.betas),
                           "discriminator": torch.optim.AdamW(D.parameters(), lr=c.lr, betas=c.betas)}
        self.d_loss_fn, self.g_loss_fn, self.fm_loss_fn = gan_losses()

    def to(self, device) -> "VocoderRecipe":
        super().to(device)
        self.front_end.to(device)
        return self

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Natural-log mel magnitude of the one front end, floored at its ``log_floor`` (what the loss compares)."""
        return torch.log(self.front_end.mel(wave.float()).clamp_min(self.spec.log_floor))

    # --- training ---------------------------------------------------------------------------------------
    def train_step(self, mel: torch.Tensor, genre: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One discriminator update (from ``gan_start`` on), then one generator update."""
        c = self.config
        wave = ctx.extras.get("wave")
        if wave is None:
            raise ConfigError("the vocoder trains on waveforms: the trainer must pass ctx.extras['wave'] "
                              "(nmusic.training.trainer.Trainer does)")
        G, D = self.modules["generator"], self.modules["discriminator"]
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        gan = ctx.step >= c.gan_start
        with ctx.autocast():
            fake = G(mel)
        fake = fake.float()
        real = wave[:, :fake.shape[-1]].float()
        terms = {}
        if gan:
            opt_d.zero_grad(set_to_none=True)
            with ctx.autocast():
                logits, _ = D(torch.cat([real, fake.detach()]))
            B = real.shape[0]
            d_loss, _, _ = self.d_loss_fn([y[:B].float() for y in logits], [y[B:].float() for y in logits])
            d_loss = d_loss.squeeze() / len(logits)
            ctx.backward(d_loss)
            ctx.optimizer_step(opt_d, D.parameters())
            terms["d_loss"] = d_loss

        opt_g.zero_grad(set_to_none=True)
        mel_l1 = (self.log_mel(fake) - self.log_mel(real)).abs().mean()
        sc, mag = multi_resolution_stft_loss(fake, real, c.stft_fft_sizes)
        g_loss = c.mel_weight * mel_l1 + c.stft_weight * (sc + mag)
        if gan:
            with self.frozen(D):
                with ctx.autocast():
                    logits, fmaps = D(torch.cat([real, fake]))
                B = real.shape[0]
                adv, _ = self.g_loss_fn([y[B:].float() for y in logits])
                fm = self.fm_loss_fn([[f[:B].float() for f in fs] for fs in fmaps],
                                     [[f[B:].float() for f in fs] for fs in fmaps])
                adv, fm = adv.squeeze() / len(logits), fm.squeeze() / len(fmaps)
                g_loss = g_loss + c.adv_weight * adv + c.fm_weight * fm
                ctx.backward(g_loss)
            terms.update(g_adv=adv, g_fm=fm)
        else:
            ctx.backward(g_loss)
        ctx.optimizer_step(opt_g, G.parameters())
        terms.update(g_loss=g_loss, mel_l1=mel_l1, stft_sc=sc, stft_mag=mag)
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def eval_step(self, mel: torch.Tensor, genre: torch.Tensor) -> dict[str, float]:
        """``mel_l1``: mean |normalised log-mel of the re-synthesis - ``mel``| (lower is better)."""
        wave = self.unwrap(self.modules["generator"])(mel.float())
        return {"mel_l1": float((self.front_end(wave) - mel).abs().mean())}

    # --- inversion --------------------------------------------------------------------------------------
    @property
    def context_frames(self) -> int:
        return self.unwrap(self.modules["generator"]).context_frames

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor, length: int | None = None, chunk_frames: int | None = None,
               batch: int = 16) -> torch.Tensor:
        """Normalised log-mel ``(B, n_mels, frames)`` (or ``(n_mels, frames)``) -> waveform ``(B, samples)`` in
        [-1, 1] on the model's device, in chunks of ``chunk_frames`` (default: the config's) with exact
        context, ``batch`` chunks at a time. ``length`` pads with silence or trims to that many samples."""
        if mel.dim() == 2:
            mel = mel[None]
        if mel.dim() != 3 or mel.shape[1] != self.spec.n_mels:
            raise ConfigError(f"vocode: expected mels of shape (B, {self.spec.n_mels}, frames), got {tuple(mel.shape)}")
        G = self.unwrap(self.modules["generator"])
        mel = mel.to(self._device()).float()
        if mel.shape[-1] < 2:
            wave = torch.zeros(mel.shape[0], 0, device=mel.device)
        else:
            wave = chunked_frames(G, mel, self.spec.hop_length, chunk_frames or self.config.chunk_frames,
                                  self.context_frames, batch)
        if length is not None:
            wave = torch.nn.functional.pad(wave, (0, max(0, length - wave.shape[-1])))[..., :length]
        return wave.clamp(-1, 1)
