"""Notebook 04's panels, driven like a listener: set widget values, click the buttons."""
import datetime
import io

import pytest
import soundfile as sf
import torch

pytest.importorskip("ipywidgets")

from nmusic.data.cache import AudioCache  # noqa: E402
from nmusic.evaluation import listening_test as mos  # noqa: E402
from nmusic.interfaces.widgets import BlindTestPanel, GeneratePanel, listening_clips  # noqa: E402


def blind_test(seed=0):
    g = torch.Generator().manual_seed(seed)
    clips = [{"source": s, "genre": genre, "wave": torch.randn(400, generator=g), "sample_rate": 8000}
             for s in ("real", "griffin-lim", "model-a") for genre in ("edm", "lofi")]
    return mos.make_blind_test(clips, seed=seed)


def test_blind_test_panel_round_trip(tmp_path):
    test, csv_path = blind_test(), tmp_path / "runs" / "listening_test.csv"
    panel = BlindTestPanel(test, csv_path, rater="ann")
    first = panel.current
    assert first.item == "clip-01" and "clip-01" in panel.progress.value and "(1 of 6)" in panel.progress.value
    assert "real" not in panel.progress.value and "model-a" not in panel.progress.value
    sf.read(io.BytesIO(panel.player.value))  # the player holds a playable WAV
    panel.button.click()  # no rating chosen yet
    assert panel.status.value == "choose a rating first" and not csv_path.exists()

    given = {}
    for k in range(len(test)):
        clip = panel.current
        panel.rating.value = 1 + (k * 2) % 5
        given[clip.item] = panel.rating.value
        panel.button.click()
        assert panel.rating.value is None, "the rating resets for the next clip"
    assert panel.current is None and "all 6 clips rated" in panel.progress.value
    assert "model-a" in panel.summary.value  # revealed only at the end
    panel.button.click()
    assert panel.status.value == "all clips are rated"

    rows = mos.load_ratings(csv_path)  # reload from disk
    assert {r["item"]: r["rating"] for r in rows} == given
    assert {r["item"]: r["source"] for r in rows} == {c.item: c.source for c in test.clips}
    summary = {s["source"]: s for s in mos.summarise(rows)}
    for source in ("real", "griffin-lim", "model-a"):
        ratings = [given[c.item] for c in test.clips if c.source == source]
        assert summary[source]["n"] == 2 and summary[source]["mean"] == pytest.approx(sum(ratings) / 2)
    assert {s["source"]: s["mean"] for s in panel.results()} == {k: v["mean"] for k, v in summary.items()}


def test_blind_test_panel_resumes_per_listener(tmp_path):
    test, csv_path = blind_test(), tmp_path / "ratings.csv"
    panel = BlindTestPanel(test, csv_path, rater="ann")
    for _ in range(2):
        panel.rating.value = 4
        panel.button.click()
    again = BlindTestPanel(test, csv_path, rater="ann")  # a disconnect later
    assert again.current.item == test.clips[2].item and "(3 of 6)" in again.progress.value
    again.rater.value = "bob"  # another listener starts from the beginning
    assert again.current.item == test.clips[0].item
    other = BlindTestPanel(blind_test(seed=1), csv_path, rater="ann")  # another test in the same file
    assert len(other.pending()) == 6


def test_generate_panel(quick_demo):
    out, report = quick_demo
    cache = AudioCache.load(out / "data" / "cache.pt")
    panel = GeneratePanel([report["run_dir"]], cache)
    assert panel.genre.options == tuple(cache.genres) and panel.run_select.value == ("cmelgan-tiny",)
    panel.genre.value, panel.seed.value, panel.temperature.value = "lofi", 5, 0.8
    panel.button.click()
    last = panel.last
    assert [r["source"] for r in last.values()] == ["cmelgan-tiny", "real", "griffin-lim"]
    assert len(panel.columns.children) == 3 and "lofi, seed 5" in panel.status.value
    sr = report["spec"]["sample_rate"]
    for title, r in last.items():
        image, audio, link = panel.columns.children[list(last).index(title)].children[1:]
        assert 'download="' in link.value and "base64," in link.value
        data, rate = sf.read(io.BytesIO(audio.value))
        assert rate == sr and len(data) == len(r["wave"]) > sr // 2
        assert image.value[:4] == b"\x89PNG"
        assert r["mel"].shape == last["real"]["mel"].shape
    real = last["real"]["wave"]
    model = next(iter(last.values()))["mel"]

    panel.button.click()  # same controls, same clips
    assert torch.equal(next(iter(panel.last.values()))["mel"], model) and torch.equal(panel.last["real"]["wave"], real)
    panel.seed.value = 6
    panel.button.click()
    assert not torch.equal(next(iter(panel.last.values()))["mel"], model)
    panel.seed.value, panel.temperature.value = 5, 1.3
    panel.button.click()
    assert not torch.equal(next(iter(panel.last.values()))["mel"], model), "temperature reaches the model"

    panel.run_select.value = ()
    assert panel.generate() == {} and "choose at least one model" in panel.status.value

    clips = listening_clips(panel, per_genre=1)
    assert len(clips) == 3 * len(cache.genres)
    assert {c["source"] for c in clips} == {"cmelgan-tiny", "real", "griffin-lim"}
    assert len({len(c["wave"]) for c in clips}) == 1, "equal lengths: duration must not give a source away"


def test_generate_panel_with_a_vocoder(quick_demo, tmp_path):
    """A vocoder of the demo's spectrogram: a "real -> vocoder" column (and blind-test source), and the
    inversion menu makes the model's audio with it."""
    from nmusic.config import resolve
    from nmusic.models.vocoder import PRESETS
    from nmusic.training.runs import train_model
    out, report = quick_demo
    small = {"dim": 16, "intermediate_dim": 32, "num_layers": 2, "clip_frames": 16, "batch_size": 2}
    voc = tmp_path / "voc"
    train_model("vocoder", "tiny", resolve(PRESETS, "tiny", small), out / "data" / "cache.pt", voc, steps=2,
                progress=False, device="cpu")
    cache = AudioCache.load(out / "data" / "cache.pt")
    panel = GeneratePanel([report["run_dir"]], cache, vocoders=[voc])
    assert panel.inversion.options == ("run's default", "griffin-lim", "voc")
    panel.genre.value, panel.seed.value = "edm", 3
    panel.button.click()
    assert [r["source"] for r in panel.last.values()] == ["cmelgan-tiny", "real", "griffin-lim", "vocoder:voc"]
    real = panel.last["real"]["wave"]
    assert len(panel.last["real -> voc"]["wave"]) == len(real)
    gl_audio = panel.last[next(iter(panel.last))]["wave"]
    panel.inversion.value = "voc"
    panel.button.click()
    voc_audio = panel.last[next(iter(panel.last))]["wave"]
    assert voc_audio.shape == gl_audio.shape and not torch.equal(voc_audio, gl_audio)
    assert {c["source"] for c in listening_clips(panel, per_genre=1)} == {"cmelgan-tiny", "real", "griffin-lim",
                                                                         "vocoder:voc"}


def test_generate_panel_length_blend_truncation_and_prime(quick_demo, tmp_path):
    out, report = quick_demo
    cache = AudioCache.load(out / "data" / "cache.pt")
    panel = GeneratePanel([report["run_dir"]], cache)
    sr = report["spec"]["sample_rate"]
    panel.seconds.value, panel.truncation.value = 3.0, 0.7
    panel.blend_on.value = True
    panel.blend["edm"].value, panel.blend["lofi"].value = 0.5, 0.5
    panel.blend["classical"].value = 0.0
    assert panel.options()["blend"] == "classical:0,edm:0.5,lofi:0.5"
    last = panel.generate()
    lengths = {len(r["wave"]) for r in last.values()}
    assert len(lengths) == 1 and 3 * sr <= lengths.pop() < 3 * sr + 256, "every column has the length asked for"
    model = next(iter(last.values()))["mel"]
    panel.truncation.value = 0.0
    assert not torch.equal(next(iter(panel.generate().values()))["mel"], model), "truncation reaches the model"
    listening = listening_clips(panel, per_genre=1, seconds=1.5)
    lengths = {len(c["wave"]) for c in listening}
    assert len(lengths) == 1 and 1.5 * sr <= lengths.pop() < 1.5 * sr + 256
    # an uploaded prime goes to a file; cMelGAN cannot continue one: a clear message, no traceback
    wave = torch.sin(torch.arange(sr) * 0.05).numpy() * 0.3
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV")
    panel.prime_upload.value = ({"name": "mine.wav", "content": memoryview(buf.getvalue()), "type": "audio/wav",
                                 "size": len(buf.getvalue()),
                                 "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert panel.options()["prime"].read_bytes() == buf.getvalue()
    assert panel.generate() == {} and "needs an autoregressive model" in panel.status.value
    panel.prime_upload.value = ()
    panel.blend["edm"].value = panel.blend["lofi"].value = 0.0
    assert panel.generate() == {} and "add up to 0" in panel.status.value
