"""sample, grid, recon, traverse, latent through CliRunner on tiny trained models: files, z values, errors."""

import re
import shutil

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error, write_dataset
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import latent
from vaecli.store.runs import RunRequest, train_or_reuse
from vaecli.views import figures

COMMANDS = ["sample", "grid", "recon", "traverse", "latent"]
MINUS = "\N{MINUS SIGN}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny data folder and two runs trained on it once: H=2 and H=3."""
    root = tmp_path_factory.mktemp("figures")
    write_dataset(root / "data" / "MNIST" / "raw")
    runs = {}
    for h in (2, 3):
        config = TrainConfig(model=ModelConfig(latent_dim=h, hidden_layers=(32, 16)), epochs=1, batch_size=32)
        runs[h] = train_or_reuse(RunRequest(config, out=root / f"h{h}", data_dir=root / "data", device="cpu")).run.path
    return root / "data", runs


@pytest.fixture
def run_copy(tiny, tmp_path):
    """A private copy of the H=2 run folder, for commands that write into it."""
    return shutil.copytree(tiny[1][2], tmp_path / "run")


def draw(tiny, command, *args, latent_dim=2):
    data, runs = tiny
    return invoke(command, "--model", runs[latent_dim], "--data-dir", data, *args)


def svg_texts(path) -> list[str]:
    """The text of a matplotlib SVG: it writes every string drawn as a comment beside its glyphs."""
    return re.findall(r"<!-- (.*?) -->", path.read_text())


def formatted(values) -> list[str]:
    return [f"{float(v):.2f}".replace("-", MINUS) for v in values]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_writes_its_file_in_the_run_folder(command, tiny, run_copy):
    result = invoke(command, "--model", run_copy, "--data-dir", tiny[0])
    assert result.exit_code == 0, result.output
    target = run_copy / f"{command}.png"
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {target}" in result.stdout.replace("\n", "")


def test_grid_coordinates_are_the_inverse_normal_cdf(tiny, tmp_path, monkeypatch):
    drawn = []
    real = figures.draw_manifold
    monkeypatch.setattr(figures, "draw_manifold", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    out = tmp_path / "grid.svg"
    result = draw(tiny, "grid", "--n", "7", "--out", out)
    assert result.exit_code == 0, result.output
    (grid,) = drawn
    expected = torch.special.ndtri((torch.arange(7, dtype=torch.float64) + 0.5) / 7)
    assert torch.allclose(grid.x_values, expected) and torch.allclose(grid.y_values, expected)
    z = grid.z.reshape(7, 7, 2)
    assert torch.allclose(z[0, :, 0].double(), expected, atol=1e-6)  # columns: z[0] left to right
    assert torch.allclose(z[:, 0, 1].double(), expected.flip(0), atol=1e-6)  # rows: z[1] top to bottom
    texts = svg_texts(out)
    ticks = formatted(expected)
    assert texts[:8] == [*ticks, "z[0]"] and texts[8:16] == [*ticks, "z[1]"]  # the axes carry the z values


def test_grid_range_spaces_z_evenly(tiny, tmp_path):
    out = tmp_path / "grid.svg"
    assert draw(tiny, "grid", "--n", "5", "--range", "-3", "3", "--out", out).exit_code == 0
    assert svg_texts(out)[:5] == formatted([-3, -1.5, 0, 1.5, 3])


def test_grid_dims_pick_the_varied_dimensions(tiny, tmp_path):
    out = tmp_path / "grid.svg"
    result = draw(tiny, "grid", "--n", "3", "--dims", "2", "0", "--out", out, latent_dim=3)
    assert result.exit_code == 0, result.output
    texts = svg_texts(out)
    assert texts[3] == "z[2]" and texts[7] == "z[0]"
    assert "z[2] and z[0] vary; the other 1 dimensions are held at 0" in texts


@pytest.mark.parametrize("command, args", [("sample", ["--n", "9"]), ("grid", ["--n", "4"]), ("recon", ["--n", "6"])])
@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_same_seed_gives_the_same_bytes(command, args, ext, tiny, tmp_path):
    paths = [tmp_path / f"{name}.{ext}" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        assert draw(tiny, command, *args, "--seed", seed, "--out", path).exit_code == 0
    first, again, other = (p.read_bytes() for p in paths)
    assert first == again
    assert (first != other) == (command != "grid")  # the grid has no randomness
    assert first.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[ext])


def test_sample_seed_picks_the_codes(tiny, tmp_path, monkeypatch):
    drawn = []
    real = figures.draw_samples
    monkeypatch.setattr(figures, "draw_samples", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    assert draw(tiny, "sample", "--n", "5", "--seed", "7", "--out", tmp_path / "s.png").exit_code == 0
    assert torch.equal(drawn[0], latent.prior_codes(5, 2, seed=7))


def test_training_options_train_once_then_draw_at_once(tiny_mnist, tmp_path):
    args = ["grid", *FAST_TRAIN_ARGS, "--lam", "10", "--n", "3", "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    (folder,) = (tmp_path / "s").iterdir()
    assert folder.name.startswith("h2-lam10-e1-s0-") and (folder / "grid.png").is_file()
    assert "Training a VAE" in first.stdout
    model_bytes = (folder / "model.safetensors").read_bytes()
    second = invoke(*args)
    assert second.exit_code == 0 and "Training" not in second.stdout
    assert f"Using the finished run {folder}" in second.stdout.replace("\n", "")
    assert (folder / "model.safetensors").read_bytes() == model_bytes


def test_traverse_top_and_quiet(tiny, tmp_path):
    result = draw(tiny, "traverse", "--top", "1", "--n", "3", "--quiet", "--out", tmp_path / "t.svg", latent_dim=3)
    assert result.exit_code == 0 and result.stdout == ""
    rows = [t for t in svg_texts(tmp_path / "t.svg") if t.startswith("z[")]
    assert len(rows) == 1


@pytest.mark.parametrize(
    "command, args, fragments",
    [
        ("grid", ["--dims", "0", "2"], ["--dims", "dim 2 does not exist", "H=2"]),
        ("grid", ["--dims", "1", "1"], ["--dims", "two different"]),
        ("grid", ["--dims", "0"], ["--dims", "exactly two"]),
        ("grid", ["--dims", "-1", "0"], ["--dims", "at least 0"]),
        ("grid", ["--n", "0"], ["--n"]),
        ("grid", ["--n", "101"], ["--n"]),
        ("sample", ["--n", "0"], ["--n"]),
        ("sample", ["--n", "500"], ["--n"]),
        ("traverse", ["--n", "101"], ["--n"]),
        ("grid", ["--range", "3", "-3"], ["--range", "LO < HI"]),
        ("grid", ["--range", "1"], ["--range"]),
        ("traverse", ["--image", "32"], ["--image", "32 images"]),
        ("sample", ["--out", "x.jpg"], ["--out", ".jpg", ".png, .pdf or .svg"]),
        ("latent", ["--out", "noextension"], ["--out", "unsupported"]),
    ],
)
def test_bad_input_gives_one_line(command, args, fragments, tiny):
    one_line_error(draw(tiny, command, *args), *fragments)


def test_unwritable_out_gives_one_line(tiny, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    one_line_error(draw(tiny, "grid", "--n", "2", "--out", blocker / "grid.png"), "cannot write", str(blocker))
    assert blocker.read_text() == "keep me"


def test_grid_on_h1_fails_before_training(tmp_path):
    one_line_error(invoke("grid", "--hidden", "1", "--runs-dir", tmp_path / "s"), "H >= 2", "H=1", "traverse")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_foreign_or_unreadable_checkpoints_give_one_line(command, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    one_line_error(invoke(command, "--model", foreign), "not a vaecli checkpoint", str(foreign))
    one_line_error(invoke(command, "--model", garbage), "not a readable safetensors", str(garbage))
    one_line_error(invoke(command, "--model", tmp_path / "nowhere"), "no such file")


def test_figure_commands_show_in_help():
    result = CliRunner().invoke(__import__("vaecli.cli", fromlist=["app"]).app, ["--help"])
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.slow
def test_every_command_on_real_mnist(mnist_dir, tmp_path):
    options = ["--epochs", "1", "--layers", "64", "--device", "cpu", "--data-dir", mnist_dir, "--runs-dir", tmp_path]
    first = invoke("grid", *options)
    assert first.exit_code == 0 and "Training a VAE" in first.stdout, first.output
    (folder,) = tmp_path.iterdir()
    for command in COMMANDS[:1] + COMMANDS[2:]:
        result = invoke(command, *options)
        assert result.exit_code == 0 and "Using the finished run" in result.stdout, result.output
    assert {f"{c}.png" for c in COMMANDS} <= {p.name for p in folder.iterdir()}
