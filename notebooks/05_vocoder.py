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
# # 05 · Vocoder: train a neural vocoder on your music, listen against Griffin-Lim
#
# The paper's conclusion: "the Griffin-Lim algorithm is likely insufficient ... a neural vocoder would
# likely greatly enhance results" (its Table 1 rates Griffin-Lim of *real* audio 0.9-1.4 out of 5).
# Nothing can be downloaded, so the vocoder is trained here, on the same audio cache the generators
# train on: a Vocos-style network (ConvNeXt blocks at frame rate, an inverse-STFT head; see
# `nmusic/models/vocoder/model.py` for why) that maps the project's normalised log-mel to audio.
# Once trained, it is the one inversion everything uses: `nmusic generate --vocoder RUN`, the panels
# and the blind test of notebook 04, `nmusic evaluate --vocoder RUN`.

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
# `tiny` trains on a CPU (the GAN losses start after 3,000 reconstruction steps); `base` is Vocos'
# own size for a GPU run of hours. Each spectrogram preset has its own (`tiny-melnet-paper`,
# `base-cmelgan-paper`, ...): a vocoder inverts only the spectrogram it was trained on.

# %%
from nmusic.config import resolve  # noqa: E402
from nmusic.device import resolve_device  # noqa: E402
from nmusic.frontend import spec_preset  # noqa: E402
from nmusic.models.vocoder import PRESETS  # noqa: E402

PRESET = "tiny"
OVERRIDES = {}
cfg = resolve(PRESETS, PRESET, OVERRIDES)
SPEC = spec_preset(cfg.spec)
RUN_DIR = WORK / "runs" / f"vocoder-{PRESET}"
DEVICE = resolve_device("auto")  # the GPU when there is one
print(cfg, "\ndevice:", DEVICE)

# %%
from nmusic.interfaces.notebook import ensure_cache  # noqa: E402

CACHE = ensure_cache(WORK, PROFILE, SPEC.sample_rate)

# %% [markdown]
# ## Train
# Live losses: the mel L1 of the re-synthesis and the multi-resolution STFT terms (spectral
# convergence, log-magnitude), later the GAN terms; the held-out mel L1 picks `best.pt`.

# %%
from nmusic.interfaces.notebook import LivePlot  # noqa: E402
from nmusic.training.runs import train_model  # noqa: E402

live = LivePlot(every=5)
summary = train_model("vocoder", PRESET, cfg, CACHE, RUN_DIR, time_budget_s=PROFILE.train_seconds,
                      callbacks=[live], train_overrides=dict(log_every=5, ckpt_every=50, val_every=50))
print({k: summary[k] for k in ("steps", "params", "train_seconds", "train_khz")})

# %% [markdown]
# ## Resume
# The same call on the same `RUN_DIR` continues from the newest checkpoint.

# %%
more = train_model("vocoder", PRESET, cfg, CACHE, RUN_DIR, time_budget_s=PROFILE.train_seconds / 2,
                   train_overrides=dict(log_every=5, ckpt_every=50, val_every=50))
print(f"resumed at step {summary['steps']}, now at step {more['steps']}")
assert more["steps"] > summary["steps"]

# %% [markdown]
# ## Listen: real, Griffin-Lim, vocoder
# Held-out clips (files the vocoder never trained on), one per genre: the real audio, then the same
# audio through mel -> Griffin-Lim and mel -> vocoder, each re-analysed into a spectrogram side by
# side, with the spectral convergence against the real clip (lower is better).

# %%
import torch  # noqa: E402
from IPython.display import display  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.data.cache import AudioCache  # noqa: E402
from nmusic.data.clips import fixed_clips, split_by_file  # noqa: E402
from nmusic.frontend import MelFrontEnd, spectral_convergence, stft_magnitude  # noqa: E402
from nmusic.interfaces.notebook import audio_player, pick_per_genre  # noqa: E402
from nmusic.inversion import GriffinLim, load_inversion  # noqa: E402
from nmusic.training.runs import describe_checkpoint, load_run  # noqa: E402

cache = AudioCache.load(CACHE)
_, val_files = split_by_file(cache)
wave, labels = fixed_clips(cache, val_files, SPEC.samples(128), per_file=1)
pick = pick_per_genre(labels, len(cache.genres), 1)
wave, labels = wave[pick], labels[pick]
front_end = MelFrontEnd(SPEC)
mel = front_end(wave)
vocoder = load_inversion(RUN_DIR, SPEC, device=DEVICE)
print("vocoder checkpoint:", describe_checkpoint(load_run(RUN_DIR, device="cpu")[1]))
torch.manual_seed(0)
outputs = {"real": wave, "Griffin-Lim": GriffinLim(front_end)(mel, wave.shape[-1]),
           "vocoder": vocoder(mel, wave.shape[-1])}
grid, titles = [], []
for i, g in enumerate(labels.tolist()):
    for name, w in outputs.items():
        sc = spectral_convergence(stft_magnitude(wave[i], SPEC), stft_magnitude(w[i], SPEC))
        sc = "" if name == "real" else f", SC {sc:.1f} dB"
        grid.append(front_end(w[i]))
        titles.append(f"{cache.genres[g]}: {name}{sc}")
plots.spectrogram_grid(torch.stack(grid), titles, cols=3);

# %%
for i, g in enumerate(labels.tolist()):
    for name, w in outputs.items():
        print(cache.genres[g], name)
        display(audio_player(w[i], SPEC.sample_rate))

# %% [markdown]
# ## Make a model's audio with it
# Recording the vocoder in a model's run folder makes it that run's default inversion: `nmusic
# generate`, `nmusic evaluate`, the panels and the demo report then use it (`--vocoder griffin-lim`
# still picks Griffin-Lim). Here: the cMelGAN run of notebook 03, when it exists with this spectrogram.

# %%
from nmusic.generate import generate  # noqa: E402
from nmusic.inversion import record_vocoder  # noqa: E402

GAN_RUN = WORK / "runs" / "cmelgan-tiny"
if (GAN_RUN / "run.json").is_file() and load_run(GAN_RUN, device="cpu")[0].spec == SPEC:
    record_vocoder(GAN_RUN, RUN_DIR)
    for path in generate(GAN_RUN, genre=cache.genres[0], n=1, out_dir=WORK / "vocoded", device=str(DEVICE)):
        print(path)
        import soundfile as sf  # noqa: E402
        display(audio_player(torch.from_numpy(sf.read(path, dtype="float32")[0]), SPEC.sample_rate))
else:
    print(f"no cMelGAN run with this spectrogram in {GAN_RUN}: run notebook 03 first to hear one through the vocoder")
