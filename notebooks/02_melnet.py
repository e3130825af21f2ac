# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
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
import os
import sys

if "google.colab" in sys.modules and not os.path.exists("nmusic"):  # Colab: get the code first
    os.system("git clone -q https://github.com/nmusic-dev/nmusic /content/nmusic")
    os.chdir("/content/nmusic")
    sys.path.insert(0, os.getcwd())
elif os.path.basename(os.getcwd()) == "notebooks":
    sys.path.insert(0, os.path.dirname(os.getcwd()))

from nmusic.notebook import setup  # noqa: E402

PROFILE, WORK = setup()
print(PROFILE.name, "profile")

# %% [markdown]
# ## Configure
# `tiny` runs on a CPU; `paper-small` / `paper-large` are the paper's Table 1 models (4.04M and
# 50.8M parameters); `checkpoint=True` trades compute for memory (paper 4.2). Put `RUN_DIR` on
# mounted Drive to survive a disconnect.

# %%
from dataclasses import replace  # noqa: E402

from nmusic.audio import spec_preset  # noqa: E402
from nmusic.config import resolve  # noqa: E402
from nmusic.models.melnet import PRESETS  # noqa: E402

PRESET = "tiny"
OVERRIDES = {}
cfg = resolve(PRESETS, PRESET, OVERRIDES)
SPEC = spec_preset(cfg.spec)
RUN_DIR = WORK / "runs" / f"melnet-{PRESET}"
print(cfg)

# %%
from nmusic.notebook import ensure_cache  # noqa: E402

CACHE = ensure_cache(WORK, PROFILE, SPEC.sample_rate)

# %% [markdown]
# ## Train tier by tier
# Every tier is trained on the ground-truth coarser tiers (teacher forcing), so tiers can be
# trained one after another in the same run folder: each session picks the newest checkpoint up
# and trains the tier asked for.

# %%
from nmusic.notebook import LivePlot  # noqa: E402
from nmusic.train_run import train_model  # noqa: E402

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

from nmusic.audio import MelFrontEnd  # noqa: E402
from nmusic.dataset import AudioCache, fixed_clips, split_by_file  # noqa: E402
from nmusic.models.melnet import gaussian_baseline_nll  # noqa: E402
from nmusic.trainer import load_run  # noqa: E402

recipe, ckpt = load_run(RUN_DIR, which="latest")
cache = AudioCache.load(CACHE)
train_files, val_files = split_by_file(cache, val_fraction=0.25, seed=0)
front_end = MelFrontEnd(SPEC)
clip = SPEC.samples(cfg.clip_frames)
train_mel = front_end(fixed_clips(cache, train_files, clip, seed=0)[0])
held_wave, held_genre = fixed_clips(cache, val_files, clip, seed=0)
held_mel = front_end(held_wave)
print(f"MelNet held-out NLL {recipe.eval_step(held_mel, held_genre)['nll']:.3f} nats/element; "
      f"Gaussian-per-bin baseline {gaussian_baseline_nll(train_mel, held_mel):.3f}")

# %% [markdown]
# ## Sample per genre, and continue a real clip
# Sampling is incremental: per frame the time RNN advances one step and the frequency RNNs run
# over one frame, batched over all genres. `temperature` < 1 plays it safer. Priming continues
# a real held-out clip (the first half of each image is real).

# %%
from IPython.display import display  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.notebook import audio_player  # noqa: E402

TEMPERATURE = 0.8
genre_ids = torch.arange(len(recipe.genres))
mels = recipe.sample(genre_ids, generator=torch.Generator().manual_seed(0), temperature=TEMPERATURE)
primed = recipe.sample(held_genre[:1], generator=torch.Generator().manual_seed(0), temperature=TEMPERATURE,
                       prime=held_mel[:1, :, : cfg.clip_frames // 2], n_frames=cfg.clip_frames)
plots.spectrogram_grid(torch.cat([mels, primed]),
                       [recipe.genres[g] for g in genre_ids] + [f"continues a real {recipe.genres[held_genre[0]]} clip"]);

# %%
waves = front_end.invert(torch.cat([mels, primed]))
for title, w in zip(recipe.genres + ["primed"], waves):
    print(title)
    display(audio_player(w, SPEC.sample_rate))
