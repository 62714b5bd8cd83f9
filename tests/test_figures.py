"""Figures from Python: panels drawn onto given Axes, titles naming the model, inactive dimensions marked."""

import shutil
import warnings
from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import latent
from vaecli.core.model import VAE
from vaecli.engine.records import EpochRecord, Terms
from vaecli.store.checkpoint import MODEL_FILE, Run, load_run
from vaecli.store.runs import RunRequest, train_or_reuse
from vaecli.views import figures

MINUS = "\N{MINUS SIGN}"


def make_run(latent_dim: int = 2) -> Run:
    config = TrainConfig(model=ModelConfig(latent_dim=latent_dim, hidden_layers=(16,)), lam=4, epochs=3)
    torch.manual_seed(0)
    return Run(path=None, config=config, model=VAE(config.model).eval())


def labels_of(ticks) -> list[str]:
    return [t.get_text() for t in ticks]


def test_panels_compose_side_by_side():
    run = make_run(3)
    fig, (left, right) = plt.subplots(1, 2)
    z = figures.draw_samples(left, run.model, n=6, seed=4)
    grid = figures.draw_manifold(right, run.model, n=5, dims=(2, 1))
    assert torch.equal(z, latent.prior_codes(6, 3, seed=4))
    assert labels_of(right.get_xticklabels()) == [f"{v:.2f}".replace("-", MINUS) for v in latent.grid_axis(5)]
    assert right.get_xlabel() == "z[2]" and right.get_ylabel() == "z[1]"
    assert grid.dims == (2, 1) and len(left.images) == 1 and len(right.images) == 1
    plt.close(fig)


def test_many_tiles_get_at_most_max_ticks_labels():
    fig, ax = plt.subplots()
    grid = figures.draw_manifold(ax, make_run().model, n=60, max_ticks=12)
    labels = labels_of(ax.get_xticklabels())
    assert 6 <= len(labels) <= 12
    assert set(labels) <= {f"{v:.2f}".replace("-", MINUS) for v in grid.x_values}
    plt.close(fig)


def test_titles_name_the_figure_and_the_model():
    run = make_run(4)
    fig = figures.latent_grid(run, n=4, dims=(1, 3), value_range=(-2, 2))
    title = fig._suptitle.get_text()
    assert "H=4, lam=4, 3 epochs, MNIST" in title
    assert "evenly spaced" in title and "z[1] and z[3] vary; the other 2 dimensions are held at 0" in title
    plt.close(fig)
    fig = figures.samples(run, n=9)
    assert fig._suptitle.get_text().startswith("9 images decoded from z ~ N(0, I)")
    plt.close(fig)


def test_traversal_marks_dimensions_below_a_hundredth_of_a_nat_inactive():
    run = make_run(3)
    with torch.no_grad():  # mu = (1, 0, 0.05) and sigma = 1 for every image: KL per dim 0.5, 0, 0.00125
        run.model.mu.weight.zero_()
        run.model.mu.bias.copy_(torch.tensor([1.0, 0.0, 0.05]))
        run.model.logvar.weight.zero_()
        run.model.logvar.bias.zero_()
    images = torch.rand(8, 784)
    fig = figures.traversals(run, images, torch.arange(8), index=2, steps=5)
    ax = fig.axes[1]
    names = labels_of(ax.get_yticklabels())
    assert names == ["z[0]  KL 0.50", "z[1]  inactive", "z[2]  inactive"]
    assert labels_of(ax.get_xticklabels()) == [f"{v:.2f}".replace("-", MINUS) for v in (-3, -1.5, 0, 1.5, 3)]
    assert "2 of 3 dimensions inactive" in fig._suptitle.get_text()
    assert "(a 2)" in fig.axes[0].get_title()
    plt.close(fig)
    fig = figures.traversals(run, images, top=1, steps=5)
    assert labels_of(fig.axes[1].get_yticklabels()) == ["z[0]  KL 0.50"]
    plt.close(fig)


@pytest.mark.parametrize("latent_dim, xlabel", [(1, "z[0]"), (2, "z[0]"), (5, "PC1 of the mean codes")])
def test_latent_scatter_axes_and_legend(latent_dim, xlabel):
    run = make_run(latent_dim)
    images, labels = torch.rand(40, 784), torch.arange(40) % 10
    fig = figures.latent_scatter(run, images, labels)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith(xlabel)
    assert labels_of(ax.get_legend().get_texts()) == [str(d) for d in range(10)]
    assert ("principal components" in fig._suptitle.get_text()) == (latent_dim > 2)
    plt.close(fig)


def test_a_lone_checkpoint_file_still_names_its_elbo(tiny_mnist, tmp_path):
    config = TrainConfig(model=ModelConfig(hidden_layers=(16,)), epochs=1, batch_size=32)
    run = train_or_reuse(RunRequest(config, out=tmp_path / "run", data_dir=tiny_mnist, device="cpu")).run
    lone = tmp_path / "shared" / "my-model.safetensors"
    lone.parent.mkdir()
    shutil.copy(run.path / MODEL_FILE, lone)
    loaded = load_run(lone)
    assert loaded.history == [] and loaded.final == run.final
    assert figures.run_label(loaded).endswith(f"test {MINUS}ELBO {run.final.test.neg_elbo:.1f} nats")


@pytest.mark.parametrize(("epochs", "ticks"), [(1, [1.0]), (4, [1.0, 2.0, 3.0, 4.0])])
def test_epoch_axes_show_whole_epochs(epochs, ticks):
    history = [EpochRecord(e, 1.0, Terms(100.0 - e, 5.0), Terms(101.0 - e, 5.0), 1.0) for e in range(1, epochs + 1)]
    fig = figures.loss_curves(history, TrainConfig(epochs=epochs))
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == ticks
    plt.close(fig)


def test_compared_manifolds_name_the_shared_vertical_axis_once():
    from vaecli.studies.scores import RunMetrics
    from vaecli.studies.sweep import Member

    runs = [make_run(2) for _ in range(3)]
    metrics = RunMetrics(100.0, 5.0, 105.0, 104.0, iw_samples=5, active_units=2, latent_dim=2, kl_per_dim=[2.0, 3.0])
    members = [Member(r.config, None, metrics, 0.0, True, [], r.model) for r in runs]
    fig = figures.compare_manifolds(members, ["lam"], n=5)
    assert [ax.get_ylabel() for ax in fig.axes] == ["z[1]", "", ""]
    assert [ax.get_xlabel() for ax in fig.axes] == ["z[0]"] * 3
    assert all(len(ax.get_yticklabels()) > 0 for ax in fig.axes)  # every panel keeps the values
    plt.close(fig)


def test_a_large_sweeps_figures_wrap_their_panels_and_lay_out(tmp_path):
    """50 members: panels wrap six to a row, constrained layout applies (no warning), every panel is drawn."""
    from vaecli.studies.scores import RunMetrics
    from vaecli.studies.sweep import Member

    run = make_run(2)
    metrics = RunMetrics(100.0, 5.0, 105.0, 104.0, iw_samples=5, active_units=2, latent_dim=2, kl_per_dim=[2.0, 3.0])
    history = [EpochRecord(1, 1.0, Terms(100.0, 5.0), Terms(100.0, 5.0), 1.0)]
    members = [
        Member(replace(run.config, lam=float(lam)), tmp_path, metrics, 0.0, True, history, run.model)
        for lam in range(1, 51)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "constrained_layout not applied" fails the test
        for fig in (
            figures.compare_samples(members, ["lam"], n=4),
            figures.kl_per_dim_bars(members, ["lam"], [[2.0, 3.0]] * 50),
            figures.compare_curves(members, ["lam"]),
        ):
            fig.canvas.draw()
            shown = [ax for ax in fig.axes if ax.get_visible()]
            assert len(shown) in (2, 50)  # the curves' two plots, or one panel per member
            if len(shown) == 50:
                assert len({round(ax.get_position().x0, 3) for ax in shown}) == figures.PANELS_PER_ROW
            plt.close(fig)
