"""Long clips judged per window, the seam profile, and the judge along a blend (``nmusic.evaluation.long_clips``)."""
import pytest
import torch

from nmusic.evaluation.judge import Judge, JudgeNet, JudgeSpec
from nmusic.evaluation.long_clips import blend_probabilities, seam_profile, window_accuracy, window_repetition
from nmusic.frontend import MelFrontEnd, SpecParams
from nmusic.models.cmelgan import CMelGANConfig, CMelGANRecipe

GENRES = ["classical", "edm", "lofi"]


def biased_judge(genre: int) -> Judge:
    """A real judge network whose head is set to be sure of ``genre`` whatever it hears."""
    net = JudgeNet(len(GENRES))
    with torch.no_grad():
        net.head[1].weight.zero_()
        net.head[1].bias.copy_(torch.full((3,), -5.0).index_fill_(0, torch.tensor([genre]), 5.0))
    return Judge(net, GENRES, JudgeSpec())


def test_window_accuracy_counts_each_window_position():
    rate = 16000
    wave = torch.randn(4, int(5.5 * rate)) * 0.1               # 2 whole 2 s windows, a tail left out
    labels = torch.tensor([0, 1, 1, 2])
    r = window_accuracy(biased_judge(1), wave, rate, labels)
    assert r["windows_per_clip"] == 2 and r["per_window"] == [0.5, 0.5] and r["all"] == 0.5
    assert r["per_genre"] == {"classical": 0.0, "edm": 1.0, "lofi": 0.0} and r["undecided"] == 0.0
    with pytest.raises(ValueError, match="shorter than one"):
        window_accuracy(biased_judge(1), wave[:, :1000], rate, labels)


def test_seam_profile_finds_tiling():
    g = torch.Generator().manual_seed(0)
    smooth = torch.randn(4, 8, 256, generator=g).cumsum(-1) / 10
    prof = seam_profile(smooth, 16)
    assert prof.shape == (16,) and (prof - 1).abs().max() < 0.3
    tiled = torch.randn(4, 8, 16, generator=g).repeat(1, 1, 16) * 0.1 + smooth[..., :256] * 0
    tiled = tiled + torch.linspace(0, 1, 16).repeat(16)          # a ramp that jumps back every 16 frames
    assert seam_profile(tiled, 16).argmax() == 15 and seam_profile(tiled, 16).max() > 2


def test_blend_probabilities_walk_from_one_genre_to_another(one_thread):
    torch.manual_seed(0)
    spec = SpecParams(n_fft=128, hop_length=64, n_mels=16)
    cfg = CMelGANConfig(clip_frames=32, batch_size=4, z_dim=8, g_channels=(8, 8, 4), upsample_factors=(2, 2),
                        finetune_kernels=(3, 5), d_channels=(8, 16, 16), d_kernels=(3, 3, 3), d_strides=(2, 2, 1),
                        d_groups=(1, 2, 1), d_minibatch_std=2, time_latent=True)
    r = CMelGANRecipe(cfg, spec, GENRES)
    out = blend_probabilities(r, biased_judge(2), MelFrontEnd(spec), "classical", "edm", steps=3, n=2, seconds=2.0)
    assert out["weight_of_end"] == [0.0, 0.5, 1.0]
    probs = torch.tensor(out["probabilities"])
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3))
    assert (probs[:, 2] > 0.99).all() and out["assigned"][1] == [0.0, 0.0, 1.0]


def test_window_repetition_spots_a_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    fresh = torch.rand(6, 8, 40, generator=g)
    assert 0.8 < window_repetition(fresh, labels, 10) < 1.2
    looped = torch.rand(6, 8, 10, generator=g).repeat(1, 1, 4)
    assert window_repetition(looped, labels, 10) < 0.01
