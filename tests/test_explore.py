"""The explorer page without a browser: embedded weights, self-containment, bad input, the command."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import SMALL, make_run, one_line_error, write_dataset
from tests.conftest import invoke as vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import Dataset, Split, load_dataset
from vaecli.core.loss import kl_divergence
from vaecli.engine.loop import train
from vaecli.errors import ConfigError
from vaecli.store.checkpoint import Run
from vaecli.store.runs import save_run
from vaecli.views import explore


def trained_run(folder: Path, data_dir: Path, **model) -> Run:
    config = TrainConfig(model=ModelConfig(**{**SMALL, **model}), epochs=1, batch_size=32)
    return save_run(folder, train(config, load_dataset("mnist", data_dir), device="cpu"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Run, Run]:
    """A tiny data folder and two trained H = 2 runs in it, shared by the command's tests (read only)."""
    root = tmp_path_factory.mktemp("explore")
    write_dataset(root / "data" / "MNIST" / "raw")
    a = trained_run(root / "a", root / "data")
    b = trained_run(root / "b", root / "data", hidden_layers=(16,))
    return root / "data", a, b


def data_of(html: str) -> dict:
    (blob,) = re.findall(r'<script type="application/json" id="vaecli-data">(.*?)</script>', html, re.S)
    return json.loads(blob)


def floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def numpy_decode(layers: list[dict], z: np.ndarray) -> np.ndarray:
    """The page's forward pass, in numpy: Linear (ReLU Linear)*, sigmoid; weights stored (n_in, n_out)."""
    x = z.astype(np.float64)
    for i, layer in enumerate(layers):
        w = floats(layer["w"]).reshape(layer["n_in"], layer["n_out"])
        x = x @ w + floats(layer["b"])
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("latent_dim, layers", [(2, (512, 256)), (20, (64,)), (3, ())])
def test_embedded_weights_decode_what_the_model_decodes(tmp_path, latent_dim, layers):
    run = make_run(tmp_path, latent_dim, hidden_layers=layers)
    data = explore.page_data([run])
    z = torch.randn(8, latent_dim) * 2
    expected = run.model.decode_mean(z).detach().numpy()
    assert np.abs(numpy_decode(data["runs"][0]["layers"], z.numpy()) - expected).max() < 1e-5


def test_page_is_self_contained(tmp_path, tiny_mnist):
    html = explore.page([make_run(tmp_path)], load_dataset("mnist", tiny_mnist))
    outside = html.replace(re.search(r'id="vaecli-data">.*?</script>', html, re.S)[0], "")
    assert "default-src 'none'" in outside  # the browser itself refuses any request
    loaders = (
        "http:",
        "https:",
        " src=",
        "<link",
        "@import",
        "url(",
        "fetch(",
        "XMLHttpRequest",
        "WebSocket",
        "import(",
    )
    for loader in loaders:
        assert loader not in outside, loader
    assert html.count("<script") == 2  # the data and the inline program


def test_names_cannot_break_out_of_the_page(tmp_path):
    name = '</script><script>alert(1)</script>{{DATA}}"'
    html = explore.page([make_run(tmp_path)], names=[name])
    assert data_of(html)["runs"][0]["name"] == name
    assert html.count("<script") == 2
    assert "<title>vaecli explore: &lt;/script&gt;" in html


def test_test_codes_give_scatter_kl_order_and_samples(tmp_path, tiny_mnist):
    run = make_run(tmp_path, latent_dim=4)
    data = load_dataset("mnist", tiny_mnist)
    payload = explore.page_data([run], data, samples=10)
    entry = payload["runs"][0]
    mu, logvar = run.model.encode(data.test.images.float())
    # the per-dimension KLs add up to the loss's KL
    assert sum(entry["kl"]) == pytest.approx(kl_divergence(mu, logvar).mean().item(), rel=1e-4)
    codes = floats(entry["codes"]).reshape(10, 4)
    images = np.frombuffer(base64.b64decode(payload["samples"]["mnist"]["images"]), np.uint8).reshape(10, 784)
    # each sample's code is the encoder's mean for that very image
    index = [int(np.abs(data.test.images.float().numpy() * 255 - im).max(1).argmin()) for im in images]
    assert np.allclose(codes, mu[index].detach().numpy(), atol=1e-6)
    assert entry["scatter"] is None  # only the plane of an H = 2 model has one


def test_h2_scatter_holds_labelled_codes_and_sets_the_extent(tmp_path, tiny_mnist):
    data = load_dataset("mnist", tiny_mnist)
    payload = explore.page_data([make_run(tmp_path)], data, points=20)
    scatter = payload["runs"][0]["scatter"]
    assert len(floats(scatter["z"])) == 40 and len(base64.b64decode(scatter["labels"])) == 20
    assert payload["extent"] >= 4 and not payload["notes"]


def test_without_a_test_set_the_page_says_so(tmp_path):
    payload = explore.page_data([make_run(tmp_path)])
    assert payload["runs"][0]["scatter"] is None and payload["samples"] == {}
    assert "no MNIST test set" in payload["notes"][0] and "no scatter" in payload["notes"][0]


def test_caption_shows_config_and_test_metrics(saved):
    run = saved[1]
    setup, metrics = explore.caption(run.config, run.final)
    assert setup == run.config.describe(long=True)
    assert setup.startswith("H=2, lam=1, layers 32-16, bernoulli likelihood, MNIST, 1 epoch, batch 32, Adam lr")
    assert f"\u2212ELBO {run.final.test.neg_elbo:.2f} nats" in metrics


def test_an_iwae_runs_caption_says_so():
    setup, _ = explore.caption(TrainConfig(objective="iwae", k=5), None)
    assert setup.startswith("H=2, lam=1, iwae k=5, layers 512-256")


@pytest.mark.parametrize(
    "other, fragment", [({"image_shape": (14, 14)}, "different image sizes"), ({"latent_dim": 3}, "latent sizes")]
)
def test_runs_that_cannot_share_a_page_are_refused(tmp_path, other, fragment):
    first = make_run(tmp_path / "a")
    second = make_run(tmp_path / "b", **{"latent_dim": 2, **other})
    with pytest.raises(ConfigError, match=fragment):
        explore.page([first, second])


def test_unknown_decoder_architecture_is_refused(tmp_path):
    run = make_run(tmp_path)
    run.model.decoder = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 784))
    with pytest.raises(ConfigError, match="Linear, Tanh, Linear"):
        explore.page([run])


# ---- the command


def invoke(*args):
    return vaecli("explore", *args)


def test_explore_writes_one_page_for_several_runs(saved, tmp_path):
    data_dir, a, b = saved
    result = invoke(a.path, b.path / "model.safetensors", "--data-dir", data_dir, "--out", tmp_path / "x.html")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "2 models, H=2" in result.stdout
    payload = data_of((tmp_path / "x.html").read_text())
    assert [r["name"] for r in payload["runs"]] == ["a", "b"]
    assert all(r["scatter"] for r in payload["runs"])
    # a lone model.safetensors brings its final test metrics in its metadata
    assert payload["runs"][1]["metrics"].startswith("test: recon")


def test_explore_without_data_writes_the_page_and_says_so(saved, tmp_path):
    result = invoke(saved[1].path, "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: no test codes on the page: MNIST not found")
    payload = data_of((tmp_path / "explore.html").read_text())
    assert payload["runs"][0]["scatter"] is None and payload["notes"]


def test_not_a_checkpoint_is_one_line(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not safetensors at all")
    one_line_error(invoke(fake), str(fake))
    one_line_error(invoke(tmp_path / "missing"), "no such file or run folder")
    assert not (tmp_path / "explore.html").exists()


def test_runs_with_different_image_sizes_are_one_line(tmp_path):
    results = []
    for name, shape in (("small", (14, 14)), ("big", (28, 28))):
        config = TrainConfig(model=ModelConfig(image_shape=shape, **SMALL), epochs=1)
        images = torch.rand(16, shape[0] * shape[1])
        split = Split(images, torch.zeros(16, dtype=torch.long))
        results.append(save_run(tmp_path / name, train(config, Dataset("mnist", split, split, shape, tmp_path))).path)
    one_line_error(invoke(*results), "different image sizes", "14x14", "28x28")


@pytest.mark.parametrize("out", ["file.txt/explore.html", "folder"])
def test_unwritable_out_is_one_line(saved, tmp_path, out):
    data_dir, run, _ = saved
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "folder").mkdir()
    one_line_error(invoke(run.path, "--data-dir", data_dir, "--out", tmp_path / out), "cannot write")
    assert (tmp_path / "file.txt").read_text() == "keep me"
