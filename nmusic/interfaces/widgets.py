"""The two interactive panels of notebook 04: generate-and-compare, and the blind listening test.

The callbacks live here rather than in the notebook so that tests drive them the way a listener
does: set widget values, call ``button.click()``, then read what the panel shows (``panel.last``,
``panel.columns``, the ratings CSV).

* :class:`GeneratePanel`: genre dropdown, model/run selector, seed and temperature sliders, the
  length, cMelGAN's truncation and genre-blend sliders, a prime to continue (MelNet; uploaded or a
  path), and a "Generate" button; shows, side by side, each selected model's sample of that genre, a real
  held-out clip of the genre and that clip's Griffin-Lim upper bound (real -> mel -> Griffin-Lim,
  the paper's "Griffin-Lim" rows), each as a spectrogram and an audio player with a download link.
* :class:`BlindTestPanel`: one unlabeled clip at a time (real, Griffin-Lim, each model, shuffled;
  see :mod:`nmusic.evaluation.listening_test`), a 1-5 rating, "save and next"; every rating is appended to the CSV at
  once, a listener who comes back resumes where they stopped, and the mean opinion scores per
  source are revealed when all clips are rated.

Needs ``ipywidgets`` (the ``notebooks`` extra).
"""
from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as W
import soundfile as sf
import torch

from .. import plots
from ..data.clips import VAL_FRACTION, read_chunks, split_by_file
from ..device import resolve_device
from ..errors import ConfigError, NmusicError
from ..evaluation.listening_test import SCALE, BlindTest, load_ratings, rated_items, save_rating, summarise
from ..frontend import MelFrontEnd, SpecParams, spec_name
from ..compose import GenerationError, load_prime, parse_genre, sample_request
from ..generate import genre_id
from ..training.runs import load_run, run_label


RUN_DEFAULT = "run's default"   # the inversion menu's first entry: the run's recorded vocoder, else Griffin-Lim


def wav_bytes(wave, sample_rate: int) -> bytes:
    """``(T,)`` waveform in [-1, 1] -> 16-bit WAV file bytes (for ``ipywidgets.Audio``)."""
    buf = io.BytesIO()
    sf.write(buf, torch.as_tensor(wave).detach().float().cpu().clamp(-1, 1).numpy(), int(sample_rate),
             format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(mel: torch.Tensor, title: str = "") -> bytes:
    return plots.png_bytes(plots.spectrogram(mel, title))


def media_column(title: str, mel: torch.Tensor | None, wave, sample_rate: int, download: str | None = None) -> W.VBox:
    """A titled column: spectrogram image (when given) above an audio player (and, with ``download``, a link
    that saves the clip as ``DOWNLOAD.wav``)."""
    parts = [W.HTML(f"<b>{html.escape(title)}</b>")]
    if mel is not None:
        parts.append(W.Image(value=spectrogram_png(mel), format="png", layout=W.Layout(width="320px")))
    parts.append(W.Audio(value=wav_bytes(wave, sample_rate), format="wav", autoplay=False, loop=False))
    if download:
        parts.append(W.HTML(download_link(wave, sample_rate, download)))
    return W.VBox(parts)


class GeneratePanel:
    """Generate one clip of a genre from each selected run, next to a real clip and its Griffin-Lim bound.

    ``run_dirs``: trained run folders (all trained on audio at ``cache``'s sample rate);
    ``cache``: the :class:`~nmusic.data.cache.AudioCache` the real clips come from; ``real_files``:
    file indices to draw them from (default: the held-out split that training used); ``vocoders``: trained
    vocoder runs, offered in the ``inversion`` menu and shown as "real -> vocoder" columns next to Griffin-Lim.
    After a click, ``last`` maps each column title to ``{"source", "mel", "wave", "sample_rate"}``.
    """

    def __init__(self, run_dirs, cache, real_files=None, device: str = "auto", vocoders=()):
        self.runs = {run_label(r): Path(r) for r in run_dirs}
        if not self.runs:
            raise ConfigError("GeneratePanel: give at least one run directory")
        self.cache, self.device = cache, resolve_device(device)
        self.real_files = list(real_files) if real_files is not None else split_by_file(cache, VAL_FRACTION)[1]
        self._recipes: dict[str, tuple] = {}
        self._front_ends: dict[SpecParams, MelFrontEnd] = {}
        self.vocoders = {run_label(v): Path(v) for v in vocoders}
        self._inversions: dict[tuple, object] = {}
        self.inversion = W.Dropdown(options=[RUN_DEFAULT, "griffin-lim", *self.vocoders], description="inversion")
        self.genre = W.Dropdown(options=list(cache.genres), description="genre")
        self.run_select = W.SelectMultiple(options=list(self.runs), value=tuple(self.runs), description="models",
                                           rows=min(6, len(self.runs)))
        self.seed = W.IntSlider(value=0, min=0, max=999, description="seed")
        self.temperature = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature")
        self.seconds = W.BoundedFloatText(value=0.0, min=0.0, max=600.0, step=0.5, description="seconds",
                                          tooltip="length of every clip; 0: each model's own clip length")
        self.truncation = W.FloatSlider(value=0.0, min=0.0, max=3.0, step=0.1, description="truncation",
                                        tooltip="cMelGAN: truncated latent (0 = off)")
        self.blend_on = W.Checkbox(value=False, description="blend genres (cMelGAN)")
        self.blend = {g: W.FloatSlider(value=1.0 if i == 0 else 0.0, min=0.0, max=1.0, step=0.05, description=g)
                      for i, g in enumerate(cache.genres)}
        self.prime_upload = W.FileUpload(accept="audio/*", multiple=False, description="prime (upload)")
        self.prime_path = W.Text(value="", placeholder="or a path to an audio file", description="prime")
        self.prime_seconds = W.BoundedFloatText(value=0.0, min=0.0, max=600.0, step=0.5, description="prime s",
                                                tooltip="use the first seconds of the prime (0 = all)")
        self.button = W.Button(description="Generate", button_style="primary", icon="play")
        self.status = W.HTML()
        self.columns = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.button.on_click(self.generate)
        self.widget = W.VBox([W.HBox([self.genre, self.run_select]), W.HBox([self.seed, self.temperature, self.inversion]),
                              W.HBox([self.seconds, self.truncation]),
                              W.HBox([self.blend_on, *self.blend.values()], layout=W.Layout(flex_flow="row wrap")),
                              W.HBox([self.prime_upload, self.prime_path, self.prime_seconds]),
                              W.HBox([self.button, self.status]), self.columns])
        self.last: dict[str, dict] = {}

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def front_end(self, spec: SpecParams) -> MelFrontEnd:
        if spec not in self._front_ends:
            self._front_ends[spec] = MelFrontEnd(spec).to(self.device)
        return self._front_ends[spec]

    def load(self, name: str) -> tuple:
        """``(recipe, ckpt)`` of run ``name``, loaded once."""
        if name not in self._recipes:
            recipe, ckpt = load_run(self.runs[name], device=self.device)
            if recipe.spec.sample_rate != self.cache.sample_rate:
                raise ConfigError(f"{self.runs[name]}: the model makes {recipe.spec.sample_rate} Hz audio but the real "
                                  f"clips are {self.cache.sample_rate} Hz; use the cache it was trained on")
            if list(recipe.genres) != list(self.cache.genres):
                raise ConfigError(f"{self.runs[name]}: trained on genres {recipe.genres}, the cache has "
                                  f"{self.cache.genres}; use the cache it was trained on")
            self._recipes[name] = (recipe, ckpt)
        return self._recipes[name]

    def inversion_for(self, choice: str | None, spec: SpecParams, run_dir=None):
        """The :class:`~nmusic.inversion.Inversion` ``choice`` names (``RUN_DEFAULT``/None: the run's recorded
        vocoder, else Griffin-Lim; ``"griffin-lim"``; a vocoder's label), loaded once."""
        from ..inversion import load_inversion
        value = None if choice in (None, RUN_DEFAULT) else str(self.vocoders.get(choice, choice))
        key = (value, spec, str(run_dir) if value is None else None)
        if key not in self._inversions:
            self._inversions[key] = load_inversion(value, spec, device=self.device, run_dir=run_dir)
        return self._inversions[key]

    def real_clip(self, genre_id: int, seed: int, n_samples: int) -> torch.Tensor:
        """A ``(n_samples,)`` chunk of a real file of ``genre_id`` (held-out when there is one), chosen by ``seed``."""
        ids = self.cache.genre_ids
        files = [f for f in self.real_files if int(ids[f]) == genre_id] or \
            (ids == genre_id).nonzero().flatten().tolist()
        g = torch.Generator().manual_seed(int(seed))
        f = files[int(torch.randint(len(files), (1,), generator=g))]
        room = max(int(self.cache.lengths[f]) - n_samples, 0)
        offset = int(torch.randint(room + 1, (1,), generator=g))
        return read_chunks(self.cache, [(f, offset)], n_samples)[0][0]

    def compare(self, genre: str, seed: int = 0, temperature: float = 1.0, runs=None,
                inversion: str | None = None, seconds: float | None = None, truncation: float | None = None,
                blend: str | None = None, prime=None, prime_seconds: float | None = None) -> dict[str, dict]:
        """``{title: {"source", "mel" (n_mels, frames), "wave" (T,), "sample_rate"}}``: one clip of ``genre``
        from each run in ``runs`` (default: all) made audible by ``inversion`` (:meth:`inversion_for`), then a
        real clip, its Griffin-Lim reconstruction and its re-synthesis by each vocoder of its spectrogram.

        ``seconds``: every clip's length (default: each model's own); ``truncation`` and ``blend``
        (``"edm:0.7,lofi:0.3"``) go to the cMelGAN runs, ``prime`` (an audio file) to the MelNet
        runs; see :mod:`nmusic.compose`."""
        gid = genre_id(list(self.cache.genres), genre)
        results: dict[str, dict] = {}
        specs: dict[SpecParams, int] = {}
        runs = list(self.runs if runs is None else runs)
        if prime and not any(self.load(name)[0].name == "melnet" for name in runs):
            raise GenerationError("prime: continuing audio needs an autoregressive model (MelNet); choose a MelNet "
                                  "run too, or clear the prime")
        for name in runs:
            recipe, ckpt = self.load(name)
            melnet = recipe.name == "melnet"
            primed = load_prime(prime, self.front_end(recipe.spec), prime_seconds) if prime and melnet else None
            which = parse_genre(blend, recipe.genres) if blend and not melnet else gid
            mel = sample_request(recipe, which, 1, seed=seed, seconds=seconds, temperature=temperature,
                                 truncation=None if melnet else truncation, prime=primed)
            inv = self.inversion_for(inversion, recipe.spec, self.runs[name])
            torch.manual_seed(seed)  # Griffin-Lim's random initial phases
            wave = inv(mel)[0]
            results[f"{name} (step {ckpt.get('step', '?')})"] = {"source": name, "mel": mel[0], "wave": wave,
                                                                 "sample_rate": recipe.spec.sample_rate}
            specs.setdefault(recipe.spec, int(mel.shape[-1]))
        for spec, frames in specs.items():
            fe = self.front_end(spec)
            wave = self.real_clip(gid, seed, spec.samples(frames))
            mel = fe(wave[None].to(self.device))
            if "real" not in results:
                results["real"] = {"source": "real", "mel": mel[0].cpu(), "wave": wave, "sample_rate": spec.sample_rate}
            torch.manual_seed(seed)
            gl = fe.invert(mel, length=len(wave))[0].cpu()
            title = "Griffin-Lim" + (f" ({spec_name(spec)})" if len(specs) > 1 else "")
            results[title] = {"source": "griffin-lim", "mel": fe(gl[None].to(self.device))[0].cpu(), "wave": gl,
                              "sample_rate": spec.sample_rate}
            for vname in self.vocoders:           # real -> vocoder, for the vocoders of this spectrogram
                try:
                    inv = self.inversion_for(vname, spec)
                except ConfigError:
                    continue
                voc = inv(mel.cpu(), samples=len(wave))[0]
                results[f"real -> {vname}"] = {"source": f"vocoder:{vname}", "mel": fe(voc[None].to(self.device))[0].cpu(),
                                               "wave": voc, "sample_rate": spec.sample_rate}
        return results

    def options(self) -> dict:
        """The length, truncation, blend and prime widgets as :meth:`compare` arguments; an uploaded
        prime is written to a temporary file first."""
        blend = None
        if self.blend_on.value:
            blend = ",".join(f"{g}:{w.value:g}" for g, w in self.blend.items())
        prime = self.prime_path.value.strip() or None
        uploads = self.prime_upload.value
        if uploads:     # ipywidgets 8: a tuple of dicts; 7: a dict name -> dict
            item = uploads[0] if isinstance(uploads, (tuple, list)) else next(iter(uploads.values()))
            name = item.get("name") or item.get("metadata", {}).get("name", "prime")
            import tempfile
            folder = Path(tempfile.mkdtemp(prefix="nmusic-prime-"))
            prime = folder / Path(name).name
            prime.write_bytes(bytes(item["content"]))
        return {"seconds": self.seconds.value or None, "truncation": self.truncation.value or None, "blend": blend,
                "prime": prime, "prime_seconds": self.prime_seconds.value or None}

    def generate(self, _button=None) -> dict[str, dict]:
        """The button's callback: fill ``columns`` (and ``last``) for the current widget values."""
        genre, seed, temperature = self.genre.value, int(self.seed.value), float(self.temperature.value)
        if not self.run_select.value:
            self.status.value = "choose at least one model"
            return {}
        self.status.value = "generating ..."
        try:
            results = self.compare(genre, seed, temperature, self.run_select.value, self.inversion.value,
                                   **self.options())
        except NmusicError as e:
            self.status.value = f"<b>error</b>: {html.escape(str(e))}"
            return {}
        self.columns.children = [media_column(t, r["mel"], r["wave"], r["sample_rate"],
                                              download=f"{t}-{genre}-{seed}") for t, r in results.items()]
        self.last = results
        self.status.value = f"{html.escape(genre)}, seed {seed}, temperature {temperature:g}"
        return results


def download_link(wave, sample_rate: int, name: str) -> str:
    """An HTML link that downloads ``wave`` as ``NAME.wav`` (the file is inside the link)."""
    import base64
    import re
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "clip"
    data = base64.b64encode(wav_bytes(wave, sample_rate)).decode()
    return f'<a download="{safe}.wav" href="data:audio/wav;base64,{data}">download {html.escape(safe)}.wav</a>'


def common_seconds(panel: GeneratePanel) -> float:
    """One length every run of ``panel`` can make: the shortest of their training clips (so that in a blind
    test no source gives itself away by its duration)."""
    return min(panel.load(name)[0].spec.seconds(panel.load(name)[0].config.clip_frames) for name in panel.runs)


def listening_clips(panel: GeneratePanel, per_genre: int = 2, seed: int = 1000, temperature: float = 1.0,
                    seconds: float | None = None) -> list[dict]:
    """Clips for :func:`nmusic.evaluation.listening_test.make_blind_test`: for every genre, ``per_genre`` draws (seeds
    ``seed, seed+1, ...``) of each run, a real held-out clip, its Griffin-Lim reconstruction and its re-synthesis by
    each of the panel's vocoders (source ``vocoder:NAME``), all of ``seconds`` (default :func:`common_seconds`):
    equal lengths, so duration tells nothing."""
    seconds = seconds or common_seconds(panel)
    clips = []
    for genre in panel.cache.genres:
        for k in range(per_genre):
            for r in panel.compare(genre, seed + k, temperature, seconds=seconds).values():
                clips.append({"source": r["source"], "genre": genre, "wave": r["wave"],
                              "sample_rate": r["sample_rate"]})
    return clips


def summary_html(summary: list[dict], by: str = "source") -> str:
    """An HTML table of :func:`nmusic.evaluation.listening_test.summarise` output."""
    def ci(s):
        hw = s.get("half_width")
        return "-" if hw is None or hw != hw else f"{s['low']:.2f} - {s['high']:.2f}"

    rows = "".join(f"<tr><td>{html.escape(str(s[by]))}</td><td>{s['n']}</td><td>{s['mean']:.2f}</td>"
                   f"<td>{ci(s)}</td></tr>" for s in summary)
    return f"<table><tr><th>{by}</th><th>ratings</th><th>MOS (/5)</th><th>95% CI</th></tr>{rows}</table>"


class BlindTestPanel:
    """Rate the clips of a :class:`~nmusic.evaluation.listening_test.BlindTest` one by one; ratings go to
    ``csv_path`` at once.

    Set ``rating.value`` (1-5) and click ``button`` (or call :meth:`submit`). The listener's name
    (``rater``) keys the resume: clips this listener already rated in this test are skipped.
    When all are rated, ``summary`` shows the MOS per source of this test (all listeners).
    """

    def __init__(self, test: BlindTest, csv_path, rater: str = "anonymous"):
        self.test, self.csv_path = test, Path(csv_path)
        self.rater = W.Text(value=rater, description="listener")
        self.progress = W.HTML()
        self.player = W.Audio(format="wav", autoplay=False, loop=False)
        self.rating = W.ToggleButtons(options=[(f"{k} {v}", k) for k, v in SCALE.items()], value=None,
                                      description="rating")
        self.button = W.Button(description="Save rating, next clip", button_style="success")
        self.status = W.HTML()
        self.summary = W.HTML()
        self.button.on_click(self.submit)
        self.rater.observe(lambda _change: self._show(), names="value")
        self.widget = W.VBox([self.rater, self.progress, self.player, self.rating, W.HBox([self.button, self.status]),
                              self.summary])
        self._show()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _rows(self) -> list[dict]:
        return load_ratings(self.csv_path) if self.csv_path.is_file() else []

    def pending(self) -> list:
        """Clips of the test this listener has not rated yet, in test order."""
        done = rated_items(self._rows(), self.test.test_id, self.rater.value.strip() or "anonymous")
        return [c for c in self.test.clips if c.item not in done]

    @property
    def current(self):
        todo = self.pending()
        return todo[0] if todo else None

    def _show(self) -> None:
        todo = self.pending()
        n = len(self.test)
        if todo:
            clip = todo[0]
            self.player.value = wav_bytes(clip.wave, clip.sample_rate)
            self.progress.value = f"<b>{clip.item}</b> ({n - len(todo) + 1} of {n}): how good does it sound?"
            self.summary.value = ""
        else:
            self.player.value = b""
            self.progress.value = f"all {n} clips rated, thank you; here is what they were:"
            self.summary.value = summary_html(self.results())

    def results(self) -> list[dict]:
        """MOS per source over all listeners' ratings of this test."""
        return summarise([r for r in self._rows() if r["test"] == self.test.test_id])

    def submit(self, _button=None) -> dict | None:
        """The button's callback: save the current rating and move on; returns the saved row (or None)."""
        clip = self.current
        if clip is None:
            self.status.value = "all clips are rated"
            return None
        if self.rating.value is None:
            self.status.value = "choose a rating first"
            return None
        row = save_rating(self.csv_path, self.test, clip, self.rating.value, self.rater.value)
        self.rating.value = None
        self.status.value = f"saved {clip.item}: {row['rating']}"
        self._show()
        return row
