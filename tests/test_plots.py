"""Figures (nmusic/plots.py): loss.png and the notebooks' live plot, one readable panel per group of losses."""
from nmusic.interfaces.notebook import LivePlot
from nmusic.plots import loss_curves, loss_panels

GAN = [{"step": s, "split": "train", "d_loss_real": 0.5, "d_loss_fake": 0.3, "d_loss_wrong": 0.2, "d_loss": 0.9,
        "d_real": 1.0, "d_fake": -1.0, "d_wrong": -0.5, "g_loss": 2.0, "g_adv": 1.0, "d_fake_g": -1.0, "g_fm": 0.5,
        "elapsed_s": 3.0, "steps_per_s": 2.0} for s in (10, 20)] + [
    {"step": 20, "split": "val", "val_stat_distance": 0.1, "val_mean_l1": 0.05, "val_std_l1": 0.05}]
MELNET = [{"step": 10, "split": "train", "nll": 1.0, "nll_tier1": 1.2, "nll_tier2": 0.8, "skipped_steps": 0},
          {"step": 10, "split": "val", "val_nll": 1.1, "val_nll_tier1": 1.3, "val_nll_tier2": 0.9}]


def test_losses_are_grouped_into_panels():
    assert loss_panels(GAN) == {
        "discriminator loss": ["d_loss_real", "d_loss_fake", "d_loss_wrong", "d_loss"],
        "discriminator logits": ["d_real", "d_fake", "d_wrong", "d_fake_g"],
        "generator": ["g_loss", "g_adv", "g_fm"],
        "validation": ["val_stat_distance", "val_mean_l1", "val_std_l1"]}
    assert loss_panels(MELNET) == {"loss": ["nll", "val_nll"], "tier 1": ["nll_tier1", "val_nll_tier1"],
                                   "tier 2": ["nll_tier2", "val_nll_tier2"]}   # training and validation together


def test_loss_png_and_the_live_plot_draw_the_same_panels(tmp_path):
    fig = loss_curves(GAN, path=tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    drawn = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in drawn] == list(loss_panels(GAN))
    assert max(len(ax.lines) for ax in drawn) <= 4 and all(ax.get_legend() for ax in drawn)
    live = LivePlot(every=100)
    for entry in GAN:
        live.on_log(entry["step"], entry)
    assert [ax.get_title() for ax in live.draw().axes if ax.lines] == list(loss_panels(GAN))
