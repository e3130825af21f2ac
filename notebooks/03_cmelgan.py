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
# A preset plus overrides. Every field is checked: a typo is an error that names the field.
# Put `RUN_DIR` on mounted Drive (`/content/drive/MyDrive/nmusic/runs/...`) so that a Colab
# disconnect loses nothing: running the training cell again resumes from the last checkpoint.

# %%
from nmusic.audio import spec_preset  # noqa: E402
from nmusic.config import resolve  # noqa: E402
from nmusic.models.cmelgan import PRESETS  # noqa: E402

PRESET = "tiny"
OVERRIDES = {}
cfg = resolve(PRESETS, PRESET, OVERRIDES)
SPEC = spec_preset(cfg.spec)
RUN_DIR = WORK / "runs" / f"cmelgan-{PRESET}"
print(cfg)

# %%
from nmusic.notebook import ensure_cache  # noqa: E402

CACHE = ensure_cache(WORK, PROFILE, SPEC.sample_rate)
print("training data:", CACHE.name)

# %% [markdown]
# ## Train
# Losses are drawn live; checkpoints go to `RUN_DIR` atomically (the last few and the best by a
# validation statistic). The time budget comes from the profile; raise it for a real run.

# %%
from nmusic.notebook import LivePlot  # noqa: E402
from nmusic.train_run import train_model  # noqa: E402

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
from nmusic.audio import MelFrontEnd  # noqa: E402
from nmusic.generate import sample_mels  # noqa: E402
from nmusic.notebook import audio_player  # noqa: E402
from nmusic.trainer import load_run  # noqa: E402

recipe, ckpt = load_run(RUN_DIR, which="latest")
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
# ## Does it sound like the genre asked for?
# Two judges trained on real clips only listen to the generated clips after Griffin-Lim, exactly as
# you hear them: a network that hears rhythm and how the spectrum moves (not the average spectrum),
# and a linear model on named musical features. Before their verdict counts, they are held to
# account: trivial fakes (the genre's average spectrum plus noise, shuffled real frames, per-bin
# noise) must score at chance. Notebook 04 has the full evaluation.

# %%
from IPython.display import Markdown  # noqa: E402

from nmusic.evaluate import evaluate_runs, validity_markdown  # noqa: E402

metrics = evaluate_runs([RUN_DIR], WORK / "eval-cmelgan", cache_path=CACHE, n_per_genre=4 * PROFILE.n_generate,
                        judge_steps=PROFILE.judge_steps, progress=False)
run = metrics["runs"][0]
display(Markdown(validity_markdown(metrics["reference"][0])))
print(f"{run['checkpoint_choice']} checkpoint, step {run['step']}: the network judge assigns "
      f"{run['accuracy_generated']['accuracy']:.0%} of generated clips the genre asked for (ceiling "
      f"{run['accuracy_ceiling']['accuracy']:.0%}); the feature judge {run['accuracy_generated_features']['accuracy']:.0%}")
plots.confusion(run["accuracy_generated"]["confusion"], recipe.genres, "generated clips, network judge");
