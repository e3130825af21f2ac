# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · MelNet: train tier by tier, resume, sample, listen
#
# MelNet (paper section 3.1) models a spectrogram element by element: a *time-delayed stack*
# (RNNs forward in time and both ways along frequency over earlier frames), a
# *frequency-delayed stack* (an RNN along frequency within the current frame) and a Gaussian
# mixture per element. The *multiscale* version splits the spectrogram into tiers by alternately
# halving time and frequency; tier 1 is conditioned on the genre, every later tier on the coarser
# ones. Here every tier has its own loss (the seed code trained only the last), the time stack
# never sees its own target, and sampling keeps the RNN state instead of re-running the network
# for every frame.

# %%
# Set-up. In Colab: the code of this notebook's version is cloned once per runtime (a restart keeps
# it) and your work is kept on Google Drive. WORK_DIR is where runs, the audio cache and ratings are
# kept: None = Google Drive (MyDrive/nmusic) in Colab, notebooks/nmusic_work elsewhere; or any folder
# (a folder under /content is lost when Colab disconnects).
WORK_DIR = None
NMUSIC_VERSION, NMUSIC_REF = "0.1.0", "main"  # the nmusic this notebook belongs to

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

COLAB = "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules
ROOT = next((d for d in (os.getcwd(), os.path.dirname(os.getcwd()), os.path.join(os.getcwd(), "nmusic"))
             if os.path.isfile(os.path.join(d, "nmusic", "__init__.py"))), None)
if ROOT is None and COLAB:  # first run in this runtime: get the code
    ROOT = os.path.join(os.getcwd(), "nmusic")
    clone = subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", NMUSIC_REF,
                            "https://github.com/nmusic-dev/nmusic", ROOT], capture_output=True, text=True)
    if clone.returncode != 0:
        raise RuntimeError(f"could not clone nmusic {NMUSIC_REF} into {ROOT}: {clone.stderr.strip()}")
if ROOT is None:
    raise RuntimeError("run this notebook from the nmusic repository's notebooks/ folder, or in Colab")
if COLAB:
    os.chdir(ROOT)  # `!python -m nmusic ...` works from here
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
if not (getattr(sys.modules.get("nmusic"), "__file__", None) or ROOT).startswith(ROOT):
    for name in [m for m in sys.modules if m.split(".")[0] == "nmusic"]:  # imported from elsewhere before
        del sys.modules[name]

from nmusic.interfaces.notebook import setup  # noqa: E402

PROFILE, WORK = setup(WORK_DIR, version=NMUSIC_VERSION)

# %% [markdown]
# ## Configure
# `tiny` runs on a CPU; `paper-small` / `paper-large` are the paper's Table 1 models (4.04M and
# 50.8M parameters); `checkpoint=True` trades compute for memory (paper 4.2). `RUN_DIR` is in the
# work folder (on Drive in Colab), so a disconnect costs only the steps since the last checkpoint.
# Training runs on the GPU when there is one, in the precision that is safe there (fp16 with a
# grad scaler for MelNet's RNNs).

# %%
from dataclasses import replace  # noqa: E402

from nmusic.config import resolve  # noqa: E402
from nmusic.device import resolve_device  # noqa: E402
from nmusic.frontend import spec_preset  # noqa: E402
from nmusic.models.melnet import PRESETS  # noqa: E402

PRESET = "tiny"
OVERRIDES = {}
cfg = resolve(PRESETS, PRESET, OVERRIDES)
SPEC = spec_preset(cfg.spec)
RUN_DIR = WORK / "runs" / f"melnet-{PRESET}"
DEVICE = resolve_device("auto")  # the GPU when there is one
print(cfg, "\ndevice:", DEVICE)

# %%
from nmusic.interfaces.notebook import ensure_cache  # noqa: E402

CACHE = ensure_cache(WORK, PROFILE, SPEC.sample_rate)

# %% [markdown]
# ## Train tier by tier
# Every tier is trained on the ground-truth coarser tiers (teacher forcing), so tiers can be
# trained one after another in the same run folder: each session picks the newest checkpoint up
# and trains the tier asked for.

# %%
from nmusic.interfaces.notebook import LivePlot  # noqa: E402
from nmusic.training.runs import train_model  # noqa: E402

n_tiers = len(cfg.layers)
schedule = dict(log_every=5, ckpt_every=50, val_every=25, sample_every=0)
for tier in range(1, n_tiers + 1):
    summary = train_model("melnet", PRESET, replace(cfg, train_tiers=[tier]), CACHE, RUN_DIR,
                          time_budget_s=PROFILE.train_seconds / n_tiers, callbacks=[LivePlot(every=5)],
                          train_overrides=schedule)
    print(f"tier {tier}: now at step {summary['steps']}, {summary['train_khz']:.0f} kHz")

# %% [markdown]
# ## Resume all tiers together
# After a disconnect this is all there is to do: the same call continues from the last checkpoint.

# %%
more = train_model("melnet", PRESET, cfg, CACHE, RUN_DIR, time_budget_s=PROFILE.train_seconds / 2,
                   train_overrides=schedule)
print(f"resumed at step {summary['steps']}, now at step {more['steps']}")
assert more["steps"] > summary["steps"]

# %% [markdown]
# ## Is it learning? Held-out NLL against a Gaussian baseline
# Nats per element on held-out files (lower is better), next to one Gaussian per mel bin fitted
# on the training files.

# %%
import torch  # noqa: E402

from nmusic.data.cache import AudioCache  # noqa: E402
from nmusic.data.clips import fixed_clips, split_by_file  # noqa: E402
from nmusic.frontend import MelFrontEnd  # noqa: E402
from nmusic.models.melnet import gaussian_baseline_nll  # noqa: E402
from nmusic.training.runs import describe_checkpoint, load_run  # noqa: E402

recipe, ckpt = load_run(RUN_DIR, device=DEVICE)  # the checkpoint `nmusic generate`/`evaluate` use
print("checkpoint:", describe_checkpoint(ckpt))
cache = AudioCache.load(CACHE)
train_files, val_files = split_by_file(cache, seed=0)
front_end = MelFrontEnd(SPEC)
clip = SPEC.samples(cfg.clip_frames)
train_mel = front_end(fixed_clips(cache, train_files, clip, seed=0)[0])
held_wave, held_genre = fixed_clips(cache, val_files, clip, seed=0)
held_mel = front_end(held_wave)
nll = recipe.eval_step(held_mel.to(DEVICE), held_genre.to(DEVICE))["nll"]
print(f"MelNet held-out NLL {nll:.3f} nats/element; "
      f"Gaussian-per-bin baseline {gaussian_baseline_nll(train_mel, held_mel):.3f}")

# %% [markdown]
# ## Sample per genre, and continue a real clip
# Sampling is incremental: per frame the time RNN advances one step and the frequency RNNs run
# over one frame, batched over all genres. `temperature` < 1 plays it safer. Priming continues
# a real held-out clip (the first half of each image is real).

# %%
from IPython.display import display  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.interfaces.notebook import audio_player  # noqa: E402

TEMPERATURE = 0.8
genre_ids = torch.arange(len(recipe.genres))
mels = recipe.sample(genre_ids, generator=torch.Generator().manual_seed(0), temperature=TEMPERATURE).cpu()
primed = recipe.sample(held_genre[:1], generator=torch.Generator().manual_seed(0), temperature=TEMPERATURE,
                       prime=held_mel[:1, :, : cfg.clip_frames // 2], n_frames=cfg.clip_frames).cpu()
plots.spectrogram_grid(torch.cat([mels, primed]),
                       [recipe.genres[g] for g in genre_ids] + [f"continues a real {recipe.genres[held_genre[0]]} clip"]);

# %%
waves = front_end.invert(torch.cat([mels, primed]))
for title, w in zip(recipe.genres + ["primed"], waves):
    print(title)
    display(audio_player(w, SPEC.sample_rate))

# %% [markdown]
# ## Any length, and your own audio
# MelNet samples any number of frames, tier by tier. `PRIME_FILE` is any audio file of yours (wav,
# flac, mp3, ogg, ...; `None`: a held-out real clip, written to a file first): it is resampled and
# analysed by the run's own front end, and the clip starts with its first `PRIME_SECONDS` and carries
# on to `SECONDS` in all (the same as `nmusic generate RUN --genre G --prime FILE --seconds S`).

# %%
import soundfile as sf  # noqa: E402

from nmusic.compose import load_prime, sample_request  # noqa: E402

PRIME_FILE, PRIME_SECONDS = None, 1.0
SECONDS = 2.0 if PROFILE.name == "test" else 8.0
if PRIME_FILE is None:
    PRIME_FILE = WORK / "prime.wav"
    sf.write(PRIME_FILE, front_end.invert(held_mel[:1])[0].numpy(), SPEC.sample_rate)
prime = load_prime(PRIME_FILE, front_end, PRIME_SECONDS)
genre = int(held_genre[0])
cont = sample_request(recipe, genre, 1, seed=0, seconds=SECONDS, temperature=TEMPERATURE, prime=prime)
plots.spectrogram_grid(cont, [f"{recipe.genres[genre]}: the first {PRIME_SECONDS:g} s are the prime"], cols=1)
display(audio_player(front_end.invert(cont)[0], SPEC.sample_rate))

