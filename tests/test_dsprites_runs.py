"""dSprites through vaecli's commands: train, the figures, eval's disentanglement metrics, ablate's tables.

The whole set is rendered once for the module (about 7 s on 2 cores, 360 MB in a
temporary folder); the runs train on 2,048 of its training images so that they
take seconds, and are scored against the whole set as any dSprites run is.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error
from vaecli import save_run, train
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import Dataset, Split, load_dataset
from vaecli.errors import ConfigError
from vaecli.studies import sweep
from vaecli.studies.factor_scores import NAMES
from vaecli.views.ablation import save_ablation

SCALE = "0.02"  # of disentanglement_lib's sample counts: the metrics in seconds, noisy
CONFIG = TrainConfig(
    model=ModelConfig(latent_dim=4, hidden_layers=(32,)), dataset="dsprites", epochs=1, batch_size=256, seed=0
)


@pytest.fixture(scope="module")
def dsprites_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dsprites-data")
    load_dataset("dsprites", folder)  # renders and caches
    return folder


def few_training_images(data: Dataset, n: int = 2048) -> Dataset:
    """`data` with only its first n training images: a fit of seconds, the test set and factor table kept."""
    rows = torch.arange(n)
    train_split = data.train
    small = Split(train_split.images.select(rows), train_split.labels[:n], train_split.factors[:n])
    return dataclasses.replace(data, train=small)


@pytest.fixture(scope="module")
def dsprites_run(dsprites_dir, tmp_path_factory) -> Path:
    data = few_training_images(load_dataset("dsprites", dsprites_dir))
    folder = tmp_path_factory.mktemp("runs") / "ds"
    return save_run(folder, train(CONFIG, data, device="cpu")).path


def test_the_split_is_seeded_fixed_and_recorded(dsprites_dir, dsprites_run):
    one, again = load_dataset("dsprites", dsprites_dir), load_dataset("dsprites", dsprites_dir)
    other = load_dataset("dsprites", dsprites_dir, split_seed=1)
    assert torch.equal(one.test.factors, again.test.factors) and not torch.equal(one.test.factors, other.test.factors)
    assert len(one.test.images) == 10_000 and len(one.train.images) == 727_280
    assert one.train.images.kind == "bits" and one.nbytes == 737_280 * 512  # packed: 360 MiB, not 11.5 GiB
    saved = json.loads((dsprites_run / "metrics.json").read_text())["config"]
    assert saved["split_seed"] == 0 and saved["dataset"] == "dsprites" and saved["model"]["image_shape"] == [64, 64]
    assert "dSprites (split seed 0)" in " ".join(invoke("info", dsprites_run).stdout.split())


def test_the_factor_table_gives_each_combination_its_image(dsprites_dir):
    data = load_dataset("dsprites", dsprites_dir)
    classes = data.test.factors[:50]
    assert torch.equal(data.factors.images_of(classes), data.test.images[torch.arange(50)])


def test_split_seed_belongs_to_dsprites_only(tiny_mnist):
    with pytest.raises(ConfigError, match="split_seed"):
        TrainConfig(split_seed=1)
    one_line_error(invoke("train", "--split-seed", "1", "--data-dir", tiny_mnist), "--split-seed", "has its own")
    # and other data sets' run names stay as they were: the field is not in their JSON
    assert "split_seed" not in TrainConfig().to_json() and TrainConfig().digest() == "48abe01d"


def test_train_on_dsprites_from_the_command_line(dsprites_dir, tmp_path):
    # a partial file in the original's format: what a user's own copy of the original is read as
    from tests.test_dsprites import write_original

    (tmp_path / "data").mkdir()
    write_original(tmp_path / "data" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "dsprites", *FAST_TRAIN_ARGS, "--data-dir", tmp_path / "data", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["config"]["model"]["image_shape"] == [64, 64]


def test_eval_prints_the_five_metrics_and_caches_them(dsprites_dir, dsprites_run):
    args = ["eval", dsprites_run, "--data-dir", dsprites_dir, "--iw-samples", "2", "--metric-scale", SCALE]
    printed = invoke(*args, "--json")
    assert printed.exit_code == 0, printed.output
    scores = json.loads(printed.stdout)["disentanglement"]
    assert list(scores) == list(NAMES) and all(0.0 <= v <= 1.0 for v in scores.values())
    cached = json.loads((dsprites_run / "scores.json").read_text())
    assert any(key.startswith("disentanglement-seed0-scale0.02-rendered") for key in cached)
    table = " ".join(invoke(*args).stdout.split())
    for title in ("BetaVAE score", "FactorVAE score", "MIG", "SAP", "DCI disentanglement", "DCI completeness"):
        assert title in table
    assert f"{scores['mig']:.3f}" in table  # the cached numbers, not new ones
    assert "split seed 0: 727,280 train, 10,000 test images" in table


def test_a_data_set_without_factors_says_so(tiny_mnist, tmp_path):
    out = tmp_path / "m"
    assert invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", out, "-q").exit_code == 0
    plain = invoke("eval", out, "--data-dir", tiny_mnist, "--iw-samples", "2")
    assert plain.exit_code == 0 and "MNIST has no factor labels: no disentanglement metrics." in plain.stdout
    assert (
        json.loads(invoke("eval", out, "--data-dir", tiny_mnist, "--iw-samples", "2", "--json").stdout)[
            "disentanglement"
        ]
        is None
    )
    asked = invoke("eval", out, "--data-dir", tiny_mnist, "--disentanglement")
    one_line_error(asked, "MNIST has no factor labels")


def test_figures_of_a_dsprites_run_name_the_factors(dsprites_dir, dsprites_run, tmp_path):
    for command in ("recon", "traverse", "latent", "sample"):
        out = tmp_path / f"{command}.png"
        result = invoke(command, dsprites_run, "--data-dir", dsprites_dir, "--out", out)
        assert result.exit_code == 0 and out.stat().st_size > 5000, result.output
    assert (tmp_path / "latent-factors.png").stat().st_size > 5000  # the latent x factor heatmap beside it


def test_ablate_tables_and_figure_hold_the_metrics(dsprites_dir, tmp_path):
    data = few_training_images(load_dataset("dsprites", dsprites_dir), 1024)
    plan = sweep.Sweep(CONFIG, lams=(1.0, 4.0), seeds=(0, 1))
    options = sweep.SweepOptions(store=tmp_path / "runs", device="cpu", iw_samples=2, metric_scale=0.02)
    members = sweep.run_sweep(plan, data, options)
    ablation = save_ablation(members, plan, data.test.images, tmp_path / "ab", 2)
    header = (tmp_path / "ab" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {*NAMES, "mig_std"} <= set(header)
    report = (tmp_path / "ab" / "report.md").read_text()
    assert "## Disentanglement (0 to 1, higher is better)" in report and "disentanglement.png" in report
    assert (tmp_path / "ab" / "disentanglement.png").stat().st_size > 10_000
    assert all(0.0 <= row["mig"] <= 1.0 for row in ablation.rows)
