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
# ## Where is your music, and which model will learn from it?
# Set `SOURCE` to a Google Drive share link or file id, a `.zip`/`.tar.*` on Drive (in Colab,
# mounted at `/content/drive`), or a local folder with one sub-folder per genre. Leave it empty to
# use the embedded dataset. `SPEC_PRESET` is the spectrogram of the model you will train: its
# sample rate is the cache's. `"default"` (16 kHz) is the `tiny` presets'; the `paper-*` presets
# use `"melnet-paper"` / `"cmelgan-paper"` (22.05 kHz). Notebooks 02-04 prepare the data again at
# another rate if a model needs one.

# %%
SOURCE = ""  # e.g. "https://drive.google.com/file/d/<id>/view" or "/content/drive/MyDrive/music.tar.gz"
SPEC_PRESET = "default"  # "default" (16 kHz: tiny presets), "melnet-paper" or "cmelgan-paper" (22.05 kHz)

# %%
from nmusic.data.fetch import fetch  # noqa: E402
from nmusic.data.synth import write_dataset  # noqa: E402
from nmusic.interfaces.notebook import scratch_dir  # noqa: E402

SCRATCH = scratch_dir(WORK)  # extracted audio: the runtime's fast disk in Colab (made again from SOURCE)
if not SOURCE:
    SOURCE = str(write_dataset(SCRATCH / "embedded", files_per_genre=PROFILE.synth_files_per_genre,
                               seconds=PROFILE.synth_seconds, seed=0))
DATA_ROOT = fetch(SOURCE, SCRATCH / "raw")
print("genres:", sorted(p.name for p in DATA_ROOT.iterdir() if p.is_dir()))

# %% [markdown]
# ## Manifest
# Every audio file becomes a row; files that cannot be decoded, are empty, shorter than a clip or
# pure silence are listed with the reason and never stop the run. Genre ids are the *sorted*
# genre names (the seed code took them from `set()` order, which changes between sessions).

# %%
from nmusic.data.manifest import build_manifest  # noqa: E402

manifest = build_manifest(DATA_ROOT, clip_seconds=PROFILE.clip_seconds)
manifest.save(WORK / "manifest.csv")
print(manifest.summary())

# %%
from nmusic import plots  # noqa: E402

plots.bar_chart({g: h * 60 for g, h in manifest.hours_per_genre().items()}, "minutes", "audio per genre");

# %% [markdown]
# ## Prepare the RAM-resident dataset
# All files are decoded and resampled with torchaudio on every core, then stored as one flat
# tensor plus offsets in the work folder (on Drive in Colab, with the manifest). Reloading it maps the
# file into memory (well under a second), so later notebooks start from here, also after a disconnect.

# %%
import time  # noqa: E402

from nmusic.data.cache import AudioCache, prepare  # noqa: E402
from nmusic.data.clips import VAL_FRACTION, split_by_file  # noqa: E402
from nmusic.frontend import MelFrontEnd, spec_preset  # noqa: E402

SPEC = spec_preset(SPEC_PRESET)
cache = prepare(manifest, SPEC.sample_rate, WORK / "cache.pt")
t0 = time.perf_counter()
cache = AudioCache.load(WORK / "cache.pt")
print(f"reloaded {sum(cache.hours_per_genre().values()):.3f} h in {time.perf_counter() - t0:.2f} s")
train_files, val_files = split_by_file(cache, seed=0)
print(f"{len(train_files)} training files, {len(val_files)} held-out files ({VAL_FRACTION:.0%} of each genre's files: "
      f"the split training and evaluation use; by file, never by clip)")

# %%
print(cache.genres)  # NBVAL_CHECK_OUTPUT

# %% [markdown]
# ## A look at the data
# Random fixed-length chunks of random songs, as the training sampler draws them; the log-mel is
# computed in batch on the device by the same front end the models and the inversion use.

# %%
import torch  # noqa: E402
from IPython.display import display  # noqa: E402

from nmusic.data.clips import fixed_clips  # noqa: E402
from nmusic.interfaces.notebook import audio_player, pick_per_genre  # noqa: E402

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
from nmusic.frontend import griffin_lim_upper_bound  # noqa: E402

torch.manual_seed(0)
bound = griffin_lim_upper_bound(waves[shown], front_end)
print(f"spectral convergence {bound['spectral_convergence_db']:.1f} dB, "
      f"log-spectral distance {bound['log_spectral_distance_db']:.1f} dB, "
      f"mel spectral convergence {bound['mel_spectral_convergence_db']:.1f} dB")
for i, audio in zip(shown, bound["audio"]):
    print(cache.genres[int(genres[i])], "(Griffin-Lim)")
    display(audio_player(audio, SPEC.sample_rate))
