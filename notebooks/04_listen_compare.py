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
# # 04 · Listen and compare: generate, blind-test, measure
#
# The paper's Table 1 (section 5) had parameters and training speed, a mean opinion score only for
# its Griffin-Lim rows, and the remark that the models' output was "indistinguishable from random
# noise". This notebook puts numbers and ears on our models:
#
# 1. **listen**: each model's sample of a genre next to a real clip of that genre and the real
#    clip's Griffin-Lim reconstruction (the best a spectrogram model can sound with this inversion);
# 2. **blind test**: rate shuffled, unlabeled clips from 1 to 5; the mean opinion score per source
#    with 95% confidence intervals fills the MOS column;
# 3. **metrics**: genre accuracy of the generated *audio*, by two judges trained on real clips only
#    and held to account by trivial fakes (which must score at chance), Fréchet and kernel distances
#    of the judge's features with their real-vs-real floors, and originality — which training file
#    each generated clip resembles most (the question of section 7) — plus Table 1's own columns.
#
# The same metrics come from the command line: `nmusic evaluate RUN_DIR [RUN_DIR ...] --out DIR`.

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
# ## Which runs?
# List the run folders to compare (e.g. on mounted Drive), or leave `RUN_DIRS` empty to take every
# trained run under the work folder's `runs/` (notebooks 02 and 03 train there). `CACHE` is the
# audio cache they were trained on; left empty, it is found next to the runs (`nmusic demo`
# layout) or notebook 01's cache is used. In the test profile, a tiny cMelGAN is trained for a few
# seconds when there is no run yet.

# %%
RUN_DIRS = []  # e.g. ["/content/drive/MyDrive/nmusic/runs/cmelgan-paper-small", ".../melnet-paper-small"]
CACHE = None   # e.g. "/content/drive/MyDrive/nmusic/cache.pt"

# %%
from pathlib import Path  # noqa: E402

from nmusic.errors import ConfigError, NmusicError  # noqa: E402
from nmusic.interfaces.notebook import ensure_cache  # noqa: E402
from nmusic.training.runs import find_cache, find_runs  # noqa: E402

from nmusic.inversion import split_vocoders  # noqa: E402

RUN_DIRS, VOCODERS = split_vocoders([Path(r) for r in RUN_DIRS] or find_runs(WORK / "runs"))  # notebook 05's vocoders
if not RUN_DIRS and PROFILE.name == "test":
    from nmusic.frontend import spec_preset
    from nmusic.models.cmelgan import PRESETS
    from nmusic.training.runs import train_model

    cfg = PRESETS["tiny"]
    train_model("cmelgan", "tiny", cfg, ensure_cache(WORK, PROFILE, spec_preset(cfg.spec).sample_rate),
                WORK / "runs" / "cmelgan-tiny", time_budget_s=PROFILE.train_seconds, progress=False,
                train_overrides=dict(val_every=0, sample_every=0))
    RUN_DIRS, VOCODERS = split_vocoders(find_runs(WORK / "runs"))
if not RUN_DIRS:
    raise NmusicError(f"no trained runs under {WORK / 'runs'}: train one (notebook 03, `nmusic train`) or set RUN_DIRS")

from nmusic.device import resolve_device  # noqa: E402

from nmusic.training.runs import load_run  # noqa: E402

DEVICE = resolve_device("auto")  # the GPU when there is one
SAMPLE_RATE = load_run(RUN_DIRS[0], device=DEVICE)[0].spec.sample_rate
if CACHE is None:
    try:
        CACHE = find_cache(RUN_DIRS[0])
    except ConfigError:
        CACHE = ensure_cache(WORK, PROFILE, SAMPLE_RATE)
RATINGS_CSV = RUN_DIRS[0].parent / "listening_test.csv"
print("runs:", [r.name for r in RUN_DIRS], "| vocoders:", [r.name for r in VOCODERS])
print("real audio:", Path(CACHE).name)

# %% [markdown]
# ## Generate and compare
# Pick a genre, the models, a seed and a temperature (scales the noise of cMelGAN, sharpens or
# flattens MelNet's mixtures), then press **Generate**: each model's clip, a real held-out clip of
# that genre, and the real clip after mel → Griffin-Lim (and after each vocoder of notebook 05), each
# with its spectrogram and a player. The *inversion* menu makes the models' audio with Griffin-Lim, a
# vocoder, or the one recorded for each run.

# %%

from nmusic.data.cache import AudioCache  # noqa: E402
from nmusic.interfaces.widgets import GeneratePanel  # noqa: E402

cache = AudioCache.load(CACHE, sample_rate=SAMPLE_RATE)
panel = GeneratePanel(RUN_DIRS, cache, device=DEVICE, vocoders=VOCODERS)
panel.generate()  # one draw right away; change the controls and press Generate for more
panel

# %%
print({title: tuple(r["mel"].shape) for title, r in panel.last.items()})

# %% [markdown]
# ## Notes: what a note-based run plays
# A MidiNet run (`nmusic train midinet`) makes notes, one bar at a time, that the embedded
# synthesiser's instruments of the genre then play; the judges, the comparison above and the blind
# test hear that audio like any other model's. Here each MidiNet run's piano-roll (drums red, bass
# blue, chords green, melody orange) next to the spectrogram of what it sounds like.

# %%
import torch  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.frontend import MelFrontEnd  # noqa: E402

for run_dir in RUN_DIRS:
    notes_model = load_run(run_dir, device=DEVICE)[0]
    if not hasattr(notes_model, "sample_audio"):
        continue
    for gid, genre in enumerate(notes_model.genres):
        audio, rolls, _ = notes_model.sample_audio([gid], 6.0, torch.Generator().manual_seed(gid))
        plots.piano_roll_and_spectrogram(rolls[0], MelFrontEnd(notes_model.spec)(audio)[0],
                                         f"{run_dir.name} · {genre}", notes_model.config.pitch_low)

# %% [markdown]
# ## Blind listening test
# Clips from every source — real audio, its Griffin-Lim reconstruction, each model — for every
# genre, shuffled and named `clip-01`, `clip-02`, ... with the same loudness, so neither name nor
# level gives the source away. Rate each on the ITU-T P.800 scale (1 bad … 5 excellent) and press
# **Save rating, next clip**: every rating goes to `listening_test.csv` next to the runs at once, so
# a disconnect loses nothing, and coming back with the same listener name resumes. Ask a few people:
# the confidence intervals shrink with the number of ratings.

# %%
from nmusic.evaluation.listening_test import make_blind_test  # noqa: E402
from nmusic.interfaces.widgets import BlindTestPanel, listening_clips  # noqa: E402

test = make_blind_test(listening_clips(panel, per_genre=PROFILE.n_generate), seed=0)
listener = BlindTestPanel(test, RATINGS_CSV, rater="listener-1")
print(f"{len(test)} clips; test id {test.test_id}")
listener

# %% [markdown]
# In the test profile nobody listens, so a scripted listener rates every clip through the panel's
# own controls (set the rating, click the button) to exercise the whole path; its ratings say
# nothing about the audio.

# %%
if PROFILE.name == "test":
    scripted = BlindTestPanel(test, RATINGS_CSV, rater="scripted-test-listener")
    for k, clip in enumerate(scripted.pending()):
        scripted.rating.value = 1 + k % 5
        scripted.button.click()
    assert scripted.current is None

# %% [markdown]
# ### Mean opinion score
# Run this cell again once the ratings are in. The interval is mean ± t(0.975, n−1)·s/√n (Student's
# t; see `nmusic.evaluation.listening_test`).

# %%
from IPython.display import Markdown, display  # noqa: E402

from nmusic import plots  # noqa: E402
from nmusic.evaluation.listening_test import load_ratings, summarise, summary_markdown  # noqa: E402

ratings = [r for r in load_ratings(RATINGS_CSV) if r["test"] == test.test_id] if RATINGS_CSV.is_file() else []
mos = summarise(ratings)
display(Markdown(summary_markdown(mos) if mos else "no ratings yet"))
if mos:
    plots.mos_bars(mos, title="mean opinion score (95% CI)");

# %% [markdown]
# ### Any length, continuations, blends
# The panel's `seconds` sets every column's length (0: each model's own clip), `truncation` and the
# blend sliders reach the cMelGAN runs, a prime (uploaded, or a path) the MelNet runs, which continue
# it; each clip has a download link. The blind test above plays clips of one length from every source,
# so duration gives no model away.

# %% [markdown]
# ## Metrics and Table 1
# `evaluate_runs` trains the two genre judges on the real training clips once per data and
# spectrogram setting (or reuses the ones saved next to the cache), holds them to account with
# trivial fakes, generates clips of every genre from each run, inverts them to audio and writes
# `metrics.json`, `metrics.md` and figures to `WORK/eval`. First: are the judges fooled? A judge
# that gives a fake its genre above chance + 10 points is reported invalid.

# %%
from nmusic.evaluation.evaluate import evaluate_runs  # noqa: E402
from nmusic.evaluation.report import table1_markdown, validity_markdown  # noqa: E402

metrics = evaluate_runs(RUN_DIRS, WORK / "eval", cache_path=CACHE, device=DEVICE,
                        n_per_genre=4 * PROFILE.n_generate, judge_steps=PROFILE.judge_steps,
                        ratings=RATINGS_CSV, test_id=test.test_id, progress=False, vocoders=VOCODERS)
for ref in metrics["reference"]:
    display(Markdown(validity_markdown(ref)))

# %% [markdown]
# Then Table 1: the genre accuracy of each model's audio next to its ceiling (real held-out clips
# after the same inversion), both judges and how often they agree; the distances next to their
# floors (other real held-out files in the generated clips' place); copies flagged against the ~5%
# expected by chance.

# %%
display(Markdown(table1_markdown(metrics)))

# %%
for r in metrics["runs"]:
    print(f"{r['name']}: {r['checkpoint_choice']} checkpoint, step {r['step']}")
    plots.confusion(r["accuracy_generated"]["confusion"], cache.genres, f"{r['name']}: generated (rows: asked for)")
    plots.nearest_distances(r["originality"]["heldout_distance"], [c["distance"] for c in r["originality"]["clips"]],
                            r["originality"]["threshold"], f"{r['name']}: distance to the nearest training clip")
plots.fd_bars([r["name"] for r in metrics["runs"]], [r["fd"] for r in metrics["runs"]],
              [r["fd_floor"] for r in metrics["runs"]], "Fréchet distance (lower is better)");

# %% [markdown]
# ### Whom does each generated clip resemble?
# The nearest training clip of every generated clip (cosine distance of the judge's features), and
# whether it is suspiciously near: nearer than 95% of real held-out clips come to the training set.

# %%
for r in metrics["runs"]:
    o = r["originality"]
    print(f"{r['name']}: {o['flagged']} of {r['n_generated']} flagged (threshold {o['threshold']:.4f}); "
          f"nearest neighbours from {o['distinct_nearest_files']} training file(s)")
    for c in o["clips"][:: max(1, len(o["clips"]) // 6)]:
        print(f"  asked {c['genre']:<10} -> {c['nearest_path']} at {c['nearest_offset_s']:.1f} s, "
              f"distance {c['distance']:.4f}{'  COPY?' if c['flagged'] else ''}")

# %% [markdown]
# ## A genre blend, judged
# The network judge's mean genre probabilities along a cMelGAN blend from one genre to another
# (`BLEND_STEPS` mixes of the two genre embeddings, the same seeds at every step): does the music
# move from one genre to the other, and where does it switch?

# %%
from nmusic.evaluation.data import EvaluationData  # noqa: E402
from nmusic.evaluation.long_clips import blend_probabilities  # noqa: E402

BLEND_FROM, BLEND_TO, BLEND_STEPS = cache.genres[0], cache.genres[1], 6
gans = [name for name in panel.runs if panel.load(name)[0].name == "cmelgan"]
if gans:
    gan = panel.load(gans[0])[0]
    data = EvaluationData(Path(CACHE), gan.spec, 0, DEVICE)
    judge, _ = data.judges(WORK / "eval", PROFILE.judge_steps, progress=False)   # the ones evaluate_runs saved
    walk = blend_probabilities(gan, judge, data.fe, BLEND_FROM, BLEND_TO, BLEND_STEPS, n=PROFILE.n_generate * 2)
    plots.blend_curve(walk, f"{gans[0]}: {BLEND_FROM} -> {BLEND_TO}");

