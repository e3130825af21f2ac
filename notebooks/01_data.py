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
# # 01 · Data: from a Drive archive to a RAM-resident dataset
#
# This notebook turns a music archive into what the models train on (paper sections 2.2 and 4.1):
#
# 1. **fetch** the archive (Google Drive link/id, a file on mounted Drive, or a local folder) and
#    extract it safely onto the *local* disk — reading from mounted Drive is slow;
# 2. **manifest**: one row per audio file (genre = top-level folder), with a report of the files
#    that were skipped and why;
# 3. **prepare**: decode and resample everything on all cores into one cache file held in RAM;
# 4. **look** at it: hours per genre, log-mel spectrograms, audio players;
# 5. the **Griffin-Lim upper bound**: real audio → mel → Griffin-Lim → audio, the best any
#    spectrogram model can sound with this inversion (the paper's "Griffin-Lim" rows).
#
# With no source given it uses the embedded procedural dataset (classical / EDM / lofi), which is
# also what the test profile (`NMUSIC_PROFILE=test`) runs.

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
print(PROFILE.name, "profile; work folder:", WORK.name)

# %% [markdown]
# ## Where is your music?
# Set `SOURCE` to a Google Drive share link or file id, a `.zip`/`.tar.*` on mounted Drive
# (mount it first: `from google.colab import drive; drive.mount('/content/drive')`), or a local
# folder with one sub-folder per genre. Leave it empty to use the embedded dataset.

# %%
SOURCE = ""  # e.g. "https://drive.google.com/file/d/<id>/view" or "/content/drive/MyDrive/music.tar.gz"

# %%
from nmusic.fetch import fetch  # noqa: E402
from nmusic.synth import write_dataset  # noqa: E402

if not SOURCE:
    SOURCE = str(write_dataset(WORK / "embedded", files_per_genre=PROFILE.synth_files_per_genre,
                               seconds=PROFILE.synth_seconds, seed=0))
DATA_ROOT = fetch(SOURCE, WORK / "raw")
print("genres:", sorted(p.name for p in DATA_ROOT.iterdir() if p.is_dir()))

# %% [markdown]
# ## Manifest
# Every audio file becomes a row; files that cannot be decoded, are empty, shorter than a clip or
# pure silence are listed with the reason and never stop the run. Genre ids are the *sorted*
# genre names (the seed code took them from `set()` order, which changes between sessions).

# %%
from nmusic.manifest import build_manifest  # noqa: E402

manifest = build_manifest(DATA_ROOT, clip_seconds=PROFILE.clip_seconds)
manifest.save(WORK / "manifest.csv")
print(manifest.summary())

# %%
from nmusic import plots  # noqa: E402

plots.bar_chart({g: h * 60 for g, h in manifest.hours_per_genre().items()}, "minutes", "audio per genre");

# %% [markdown]
# ## Prepare the RAM-resident dataset
# All files are decoded and resampled with torchaudio on every core, then stored as one flat
# tensor plus offsets. Reloading it takes seconds, so later notebooks start from here.

# %%
import time  # noqa: E402

from nmusic.audio import MelFrontEnd, SpecParams  # noqa: E402
from nmusic.dataset import AudioCache, prepare, split_by_file  # noqa: E402

SPEC = SpecParams()
cache = prepare(manifest, SPEC.sample_rate, WORK / "cache.pt")
t0 = time.perf_counter()
cache = AudioCache.load(WORK / "cache.pt")
print(f"reloaded {sum(cache.hours_per_genre().values()):.3f} h in {time.perf_counter() - t0:.2f} s")
train_files, val_files = split_by_file(cache, val_fraction=0.2, seed=0)
print(f"{len(train_files)} training files, {len(val_files)} held-out files (split by file, never by clip)")

# %%
print(cache.genres)  # NBVAL_CHECK_OUTPUT

# %% [markdown]
# ## A look at the data
# Random fixed-length chunks of random songs, as the training sampler draws them; the log-mel is
# computed in batch on the device by the same front end the models and the inversion use.

# %%
import torch  # noqa: E402
from IPython.display import display  # noqa: E402

from nmusic.dataset import fixed_clips  # noqa: E402
from nmusic.notebook import audio_player, pick_per_genre  # noqa: E402

front_end = MelFrontEnd(SPEC)
clip_samples = SPEC.samples(128)
waves, genres = fixed_clips(cache, val_files, clip_samples, seed=0)
shown = pick_per_genre(genres, len(cache.genres), PROFILE.show_per_genre)
mels = front_end(waves[shown])
plots.spectrogram_grid(mels, [cache.genres[int(genres[i])] for i in shown]);

# %%
for i in shown:
    print(cache.genres[int(genres[i])])
    display(audio_player(waves[i], SPEC.sample_rate))

# %% [markdown]
# ## The Griffin-Lim upper bound
# Real audio → normalised log-mel → inverse mel filters (the same tensor) → Griffin-Lim with
# momentum. Spectral convergence compares the linear spectrograms (lower is better); this is as
# good as any generated spectrogram can sound with this inversion.

# %%
from nmusic.audio import griffin_lim_upper_bound  # noqa: E402

torch.manual_seed(0)
bound = griffin_lim_upper_bound(waves[shown], front_end)
print(f"spectral convergence {bound['spectral_convergence_db']:.1f} dB, "
      f"log-spectral distance {bound['log_spectral_distance_db']:.1f} dB, "
      f"mel spectral convergence {bound['mel_spectral_convergence_db']:.1f} dB")
for i, audio in zip(shown, bound["audio"]):
    print(cache.genres[int(genres[i])], "(Griffin-Lim)")
    display(audio_player(audio, SPEC.sample_rate))
