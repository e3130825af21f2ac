"""MidiNet-style note GAN: shapes, the conditioning paths, one training step, training with the shared
trainer on the synthesiser's notes (seconds), resume, rendering a bar to audio, and generate's .mid/.wav."""
import dataclasses

import pretty_midi
import pytest
import torch

from nmusic.data import synth
from nmusic.data.midi import STEPS, TRACKS, build_note_manifest, prepare_notes
from nmusic.errors import ConfigError
from nmusic.frontend import spec_preset
from nmusic.generate import generate
from nmusic.models import registry
from nmusic.models.base import StepContext
from nmusic.models.midinet import PRESETS, MidiNetConfig, MidiNetRecipe
from nmusic.models.midinet.data import BarPairs, load_notes, split_notes
from nmusic.training.runs import load_run, train_model

GENRES = list(synth.GENRES)
MINI = dict(batch_size=4, n_pitches=36, pitch_low=36, z_dim=8, genre_dim=4, g_hidden=32, g_channels=8,
            cond_channels=4, d_channels=(4, 8), d_hidden=16, clip_frames=16)


def mini(**kw) -> MidiNetRecipe:
    torch.manual_seed(0)
    cfg = MidiNetConfig(**{**MINI, **kw})
    return MidiNetRecipe(cfg, spec_preset(cfg.spec), GENRES)


def pairs(r, B=4):
    x = (torch.rand(B, 2, len(TRACKS), STEPS, r.config.n_pitches) > 0.9).float()
    return x, torch.arange(B) % len(GENRES)


def test_registered_with_tiny_and_paper_presets():
    presets, cls = registry()["midinet"]
    assert cls is MidiNetRecipe and set(presets) == {"tiny", "paper"}
    paper = PRESETS["paper"]
    assert (paper.n_pitches, paper.z_dim, paper.g_hidden, paper.d_channels, paper.batch_size) == (128, 100, 1024,
                                                                                                    (14, 77), 72)
    with pytest.raises(ConfigError, match="n_pitches"):
        MidiNetConfig(pitch_low=100, n_pitches=72)


@pytest.mark.parametrize("chords", [False, True])
def test_one_training_step_moves_both_networks(chords):
    r = mini(use_chords=chords)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in r.modules.items()}
    x, g = pairs(r)
    losses = r.train_step(x, g, StepContext(0, torch.device("cpu")))
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    for name, m in r.modules.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters())), name


def test_the_generator_hears_the_previous_bar_and_the_genre():
    r = mini()
    for m in r.modules.values():
        m.eval()
    G, z = r.modules["generator"], torch.randn(2, 8)
    prev = torch.zeros(2, len(TRACKS), STEPS, 36)
    y = r.condition(torch.tensor([0, 0]))
    base = G(z, y, prev)
    assert not torch.allclose(base, G(z, y, prev + 1))
    assert not torch.allclose(base, G(z, r.condition(torch.tensor([1, 2])), prev))


def embedded_notes(tmp_path, files=2, seconds=6.0):
    root = synth.write_dataset(tmp_path / "raw", files_per_genre=files, seconds=seconds, sample_rate=16000,
                               formats=("wav",), channels=(1,), progress=False)
    m = build_note_manifest(root, workers=1, progress=False)
    return prepare_notes(m, tmp_path / "cache.notes.pt", genres=GENRES)


@pytest.fixture(scope="module")
def notes_dir(tmp_path_factory):
    """The synthesiser's notes of 2 x 6 s per genre as a note cache, beside a (silent) audio twin cache."""
    from nmusic.data.cache import AudioCache
    folder = tmp_path_factory.mktemp("notes")
    notes = embedded_notes(folder)
    AudioCache.from_waves([torch.zeros(16000) for _ in notes.paths], notes.genre_ids.tolist(), GENRES,
                          [p.replace(".mid", ".wav") for p in notes.paths], 16000).save(folder / "cache.pt")
    return folder, notes


def test_bar_pairs_pair_each_bar_with_the_one_before(notes_dir):
    _, notes = notes_dir
    data = BarPairs(notes, 24, 72, spec_preset("default"))
    f = 1
    bars = notes.bars_of(f)
    x = data.pairs[bars]
    assert not x[0, 0].any()                                           # a song's first bar follows silence
    assert torch.equal(x[1:, 0], x[:-1, 1])
    a = next(data.loader(range(len(notes)), 6, seed=3, start_step=5, steps=6))
    b = next(data.loader(range(len(notes)), 6, seed=3, start_step=5, steps=6))
    assert torch.equal(a[0], b[0]) and a[0].shape == (6, 2, len(TRACKS), STEPS, 72)
    assert data.clip_frames > 2
    with pytest.raises(ConfigError, match="midinet trains on notes"):
        BarPairs(object(), 24, 72, spec_preset("default"))


def test_split_holds_out_the_same_songs_as_the_audio(tmp_path):
    from nmusic.data.cache import AudioCache
    from nmusic.data.clips import split_by_file
    notes = embedded_notes(tmp_path, files=4, seconds=3.0)
    waves = [torch.zeros(16000) for _ in notes.paths]
    audio = AudioCache.from_waves(waves, notes.genre_ids.tolist(), GENRES,
                                  [p.replace(".mid", ".wav") for p in notes.paths], 16000)
    audio.save(tmp_path / "cache.pt")
    train, val = split_notes(notes, tmp_path / "cache.pt", seed=1)
    _, a_val = split_by_file(audio, seed=1)
    assert sorted(notes.paths[i] for i in val) == sorted(audio.paths[i].replace(".wav", ".mid") for i in a_val)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(notes)
    loaded, audio_path = load_notes(tmp_path / "cache.pt")
    assert audio_path == tmp_path / "cache.pt" and loaded.paths == notes.paths


def test_trains_with_the_trainer_resumes_and_renders_a_bar(notes_dir, tmp_path):
    """CI: the tiny MidiNet for a few steps on the synthesiser's notes, resumed, then a bar as audio and MIDI."""
    folder, _ = notes_dir
    cfg = dataclasses.replace(PRESETS["tiny"], batch_size=8)
    run = tmp_path / "run"
    over = {"sample_every": 0, "val_every": 3, "log_every": 1, "ckpt_every": 3}
    first = train_model("midinet", "tiny", cfg, folder / "cache.pt", run, steps=3, progress=False,
                        train_overrides=over)
    assert first["steps"] == 3
    again = train_model("midinet", "tiny", cfg, folder / "cache.pt", run, steps=5, progress=False,
                        train_overrides=over)
    assert again["steps"] == 5
    recipe, ckpt = load_run(run, device="cpu")
    assert ckpt["step"] == 5 and recipe.songs[0] and all("bpm" in s for s in recipe.songs[1])
    mel = recipe.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), n_frames=32)
    assert mel.shape == (2, recipe.spec.n_mels, 32) and torch.isfinite(mel).all()
    wavs = generate(run, "edm", n=1, out_dir=tmp_path / "gen", seconds=2.0, device="cpu", progress=False)
    mid = wavs[0].with_suffix(".mid")
    assert wavs[0].is_file() and mid.is_file() and wavs[0].with_suffix(".png").is_file()
    pm = pretty_midi.PrettyMIDI(str(mid))
    bpm = pm.get_tempo_changes()[1][0]                     # the tempo of one of edm's training songs
    assert any(abs(bpm - song["bpm"]) < 0.01 for song in recipe.songs[1])
    with pytest.raises(ConfigError, match="no note cache"):
        train_model("midinet", "tiny", cfg, tmp_path / "nothing.pt", tmp_path / "run2", steps=1, progress=False)
