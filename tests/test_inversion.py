"""The one inversion choice: a seconds-long tiny vocoder trained, resumed exactly, chosen by generate, and
refused for another spectrogram."""
from __future__ import annotations

import json

import pytest
import torch

from nmusic.errors import ConfigError
from nmusic.frontend import spec_preset
from nmusic.inversion import GriffinLim, Vocoded, check_same_spec, load_inversion, record_vocoder

SMALL = {"dim": 16, "intermediate_dim": 32, "num_layers": 2, "clip_frames": 16, "batch_size": 2, "gan_start": 2,
         "periods": [], "mrd_channels": 4, "mrd_fft_sizes": [256], "stft_fft_sizes": [256, 512]}


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    from nmusic.data.embedded import synthetic_cache
    path = tmp_path_factory.mktemp("data") / "cache.pt"
    synthetic_cache(16000, seconds=3.0, files_per_genre=2).save(path)
    return path


def _train(cache_path, run, steps, **kw):
    from nmusic.config import resolve
    from nmusic.models.vocoder import PRESETS
    from nmusic.training.runs import train_model
    cfg = resolve(PRESETS, "tiny", SMALL)
    return train_model("vocoder", "tiny", cfg, cache_path, run, steps=steps, progress=False, device="cpu",
                       train_overrides={"ckpt_every": 2, "val_every": 2, "log_every": 1, **kw})


@pytest.fixture(scope="module")
def vocoder_run(cache_path, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "vocoder"
    _train(cache_path, run, steps=4)
    return run


def test_resume_is_exact(cache_path, vocoder_run, tmp_path):
    """2 steps, stop, 2 more (the GAN starts at step 2) == the 4-step run: same losses, same weights."""
    from nmusic.training.runs import load_run
    run = tmp_path / "resumed"
    _train(cache_path, run, steps=2)
    _train(cache_path, run, steps=4)
    a = json.loads((vocoder_run / "history.json").read_text())
    b = json.loads((run / "history.json").read_text())
    strip = [{k: v for k, v in e.items() if k not in ("elapsed_s", "steps_per_s")} for e in a]
    assert strip == [{k: v for k, v in e.items() if k not in ("elapsed_s", "steps_per_s")} for e in b]
    assert any("d_loss" in e for e in a)
    ra, _ = load_run(vocoder_run, device="cpu", which="latest")
    rb, _ = load_run(run, device="cpu", which="latest")
    for m in ("generator", "discriminator"):
        for x, y in zip(ra.modules[m].state_dict().values(), rb.modules[m].state_dict().values()):
            assert torch.equal(x, y)


def test_load_inversion_choices(vocoder_run, tmp_path):
    spec = spec_preset("default")
    assert isinstance(load_inversion(None, spec, device="cpu"), GriffinLim)
    gl = load_inversion("griffin-lim-7", spec, device="cpu")
    assert isinstance(gl, GriffinLim) and gl.n_iter == 7 and gl.name == "griffin-lim-7"
    voc = load_inversion(str(vocoder_run), spec, device="cpu")
    assert isinstance(voc, Vocoded) and voc.name == "vocoder:vocoder"
    mel = torch.rand(3, 64, 40) * 2 - 1
    wave = voc(mel, samples=9000, batch=2)
    assert wave.shape == (3, 9000) and wave.device.type == "cpu" and wave.abs().max() <= 1
    model_run = tmp_path / "model"
    model_run.mkdir()
    assert isinstance(load_inversion(None, spec, device="cpu", run_dir=model_run), GriffinLim)
    record_vocoder(model_run, vocoder_run)
    assert isinstance(load_inversion(None, spec, device="cpu", run_dir=model_run), Vocoded)
    with pytest.raises(ConfigError, match="no such run"):
        load_inversion(str(tmp_path / "missing"), spec)


def test_spectrogram_mismatch_names_both(vocoder_run):
    with pytest.raises(ConfigError) as e:
        load_inversion(str(vocoder_run), spec_preset("melnet-paper"), device="cpu", model_label="the model run M")
    msg = str(e.value)
    assert "'default'" in msg and "'melnet-paper'" in msg and str(vocoder_run) in msg and "the model run M" in msg
    assert "sample_rate: 22050 vs 16000" in msg and "tiny-melnet-paper" in msg
    check_same_spec(spec_preset("default"), spec_preset("default"), "a", "b")


def test_generate_cli_uses_the_vocoder_and_remembers_it(cache_path, vocoder_run, tmp_path, capsys):
    import soundfile as sf

    from nmusic.config import resolve
    from nmusic.interfaces.cli import main
    from nmusic.models.cmelgan import PRESETS
    from nmusic.training.runs import train_model
    model = tmp_path / "gan"
    cfg = resolve(PRESETS, "tiny", {"d_temporal_scales": [], "batch_size": 2})
    train_model("cmelgan", "tiny", cfg, cache_path, model, steps=1, progress=False, device="cpu")
    out = tmp_path / "clips"
    assert main(["generate", str(model), "--genre", "edm", "--n", "2", "--out", str(out), "--vocoder",
                 str(vocoder_run), "--remember", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "inversion: vocoder:vocoder" in err
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2 and sf.info(wavs[0]).samplerate == 16000
    assert main(["generate", str(model), "--genre", "edm", "--n", "1", "--out", str(tmp_path / "again"),
                 "--device", "cpu"]) == 0
    assert "inversion: vocoder:vocoder" in capsys.readouterr().err     # the recorded one, by default
    assert main(["generate", str(model), "--genre", "edm", "--n", "1", "--out", str(tmp_path / "gl"),
                 "--vocoder", "griffin-lim", "--device", "cpu"]) == 0
    assert "inversion: griffin-lim-32" in capsys.readouterr().err
    assert main(["generate", str(vocoder_run), "--genre", "edm", "--device", "cpu"]) == 2
    assert "is a vocoder" in capsys.readouterr().err
    from nmusic.inversion import split_vocoders
    assert split_vocoders([vocoder_run, model]) == ([model], [vocoder_run])
