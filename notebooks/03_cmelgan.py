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
# # 03 · cMelGAN: train, resume, generate, listen
#
# The paper's conditional MelGAN (section 3.2): a generator that turns noise × genre embedding into
# a mel spectrogram through 2D transposed convolutions with dilated residual blocks and a 1D
# "fine-tuning" stack (which the seed code built and never called), and a grouped-convolution
# discriminator that sees the genre as an extra channel and learns that a *real* spectrogram with
# the *wrong* genre is fake. The paper's training never converged; the `tiny`/`paper-*` presets
# add the field's stabilisers (see `nmusic/models/cmelgan.py`); `paper-small-original` keeps the
# paper's own loss.

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
# A preset plus overrides. Every field is checked: a typo is an error that names the field.
# `RUN_DIR` is in the work folder (on Drive in Colab, `MyDrive/nmusic/runs/...`), so a Colab
# disconnect costs only the steps since the last checkpoint: running the training cell again
# resumes from it. Training runs on the GPU when there is one (bf16 where the GPU has it, else
# fp16 with a grad scaler).

# %%
from nmusic.config import resolve  # noqa: E402
from nmusic.device import resolve_device  # noqa: E402
from nmusic.frontend import spec_preset  # noqa: E402
from nmusic.models.cmelgan import PRESETS  # noqa: E402

PRESET = "tiny"
OVERRIDES = {}
cfg = resolve(PRESETS, PRESET, OVERRIDES)
SPEC = spec_preset(cfg.spec)
RUN_DIR = WORK / "runs" / f"cmelgan-{PRESET}"
DEVICE = resolve_device("auto")  # the GPU when there is one
print(cfg, "\ndevice:", DEVICE)

# %%
from nmusic.interfaces.notebook import ensure_cache  # noqa: E402

CACHE = ensure_cache(WORK, PROFILE, SPEC.sample_rate)

# %% [markdown]
# ## Train
# Losses are drawn live; checkpoints go to `RUN_DIR` atomically (the last few and the best by a
# validation statistic). The time budget comes from the profile; raise it for a real run.

# %%
from nmusic.interfaces.notebook import LivePlot  # noqa: E402
from nmusic.training.runs import train_model  # noqa: E402

live = LivePlot(every=5)
summary = train_model("cmelgan", PRESET, cfg, CACHE, RUN_DIR, time_budget_s=PROFILE.train_seconds,
                      callbacks=[live], train_overrides=dict(log_every=5, ckpt_every=50, val_every=100,
                                                             sample_every=200))
print({k: summary[k] for k in ("steps", "params", "train_seconds", "train_khz")})

# %% [markdown]
# ## Resume
# Running training again on the same `RUN_DIR` continues from the newest checkpoint — after a
# disconnect, this is all there is to do.

# %%
more = train_model("cmelgan", PRESET, cfg, CACHE, RUN_DIR, time_budget_s=PROFILE.train_seconds / 2,
                   train_overrides=dict(log_every=5, ckpt_every=50, val_every=100, sample_every=200))
print(f"resumed at step {summary['steps']}, now at step {more['steps']}")
assert more["steps"] > summary["steps"]

# %% [markdown]
# ## Generate and listen
# One row per genre: the spectrogram the generator made for that genre, inverted with
# Griffin-Lim through the same mel filters the data was analysed with.

# %%
from IPython.display import display  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.frontend import MelFrontEnd  # noqa: E402
from nmusic.generate import sample_mels  # noqa: E402
from nmusic.interfaces.notebook import audio_player  # noqa: E402
from nmusic.training.runs import describe_checkpoint, load_run  # noqa: E402

recipe, ckpt = load_run(RUN_DIR, device=DEVICE)  # the checkpoint `nmusic generate`/`evaluate` use
print("checkpoint:", describe_checkpoint(ckpt))
ids = [g for g in range(len(recipe.genres)) for _ in range(PROFILE.n_generate)]
mels = sample_mels(recipe, ids, seed=0)
plots.spectrogram_grid(mels, [recipe.genres[g] for g in ids], cols=PROFILE.n_generate);

# %%
front_end = MelFrontEnd(SPEC)
waves = front_end.invert(mels)
for g, w in zip(ids, waves):
    print(recipe.genres[g])
    display(audio_player(w, SPEC.sample_rate))

# %% [markdown]
# ## Any length, variations, genre blends
# The `tiny` generator's noise is a sequence along time, so it makes clips of any length (here
# `SECONDS`) with no seams; it was trained on random crops of longer outputs. A seed sweep with a
# truncated latent (`TRUNCATION`: smaller is safer and less varied) gives variations of one genre, and
# mixed genre embeddings give blends (`nmusic generate RUN --genre edm:0.7,lofi:0.3 --seconds 10`).

# %%
import torch  # noqa: E402

from nmusic.compose import parse_genre, sample_request  # noqa: E402

SECONDS, TRUNCATION, BLEND = 10.0, 1.0, f"{recipe.genres[0]}:0.5,{recipe.genres[-1]}:0.5"
long = sample_request(recipe, 0, 1, seed=0, seconds=SECONDS)
sweep = torch.cat([sample_request(recipe, 0, 1, seed=s, truncation=TRUNCATION) for s in range(3)])
blend = sample_request(recipe, parse_genre(BLEND, recipe.genres), 1, seed=0)
plots.spectrogram_grid(long, [f"{recipe.genres[0]}, {SECONDS:g} s"], cols=1)
plots.spectrogram_grid(torch.cat([sweep, blend]), [f"seed {s}, truncation {TRUNCATION}" for s in range(3)] + [BLEND],
                       cols=4);

# %%
for title, w in [(f"{SECONDS:g} s", front_end.invert(long)[0])] + list(
        zip(["seed 0", "seed 1", "seed 2", BLEND], front_end.invert(torch.cat([sweep, blend])))):
    print(title)
    display(audio_player(w, SPEC.sample_rate))

# %% [markdown]
# ## Does it sound like the genre asked for?
# Two judges trained on real clips only listen to the generated clips after Griffin-Lim, exactly as
# you hear them: a network that hears rhythm and how the spectrum moves (not the average spectrum),
# and a linear model on named musical features. Before their verdict counts, they are held to
# account: trivial fakes (the genre's average spectrum plus noise, shuffled real frames, per-bin
# noise) must score at chance. Notebook 04 has the full evaluation.

# %%
from IPython.display import Markdown  # noqa: E402

from nmusic.evaluation.evaluate import evaluate_runs  # noqa: E402

from nmusic.evaluation.report import validity_markdown  # noqa: E402

metrics = evaluate_runs([RUN_DIR], WORK / "eval-cmelgan", cache_path=CACHE, device=DEVICE,
                        n_per_genre=4 * PROFILE.n_generate,
                        judge_steps=PROFILE.judge_steps, progress=False)
run = metrics["runs"][0]
display(Markdown(validity_markdown(metrics["reference"][0])))
print(f"{run['checkpoint_choice']} checkpoint, step {run['step']}: the network judge assigns "
      f"{run['accuracy_generated']['accuracy']:.0%} of generated clips the genre asked for (ceiling "
      f"{run['accuracy_ceiling']['accuracy']:.0%}); the feature judge {run['accuracy_generated_features']['accuracy']:.0%}")
plots.confusion(run["accuracy_generated"]["confusion"], recipe.genres, "generated clips, network judge");
