"""The table of options: every config field is an option of train, ablate, the config files and the reproduce
line, and a config survives the trip through each."""

from dataclasses import fields

import pytest

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error, run_vaecli
from vaecli.cli.training import SWEEP_LISTS, TRAINING_OPTIONS
from vaecli.config import ModelConfig, TrainConfig
from vaecli.configfile import read_options, to_toml
from vaecli.errors import ConfigError
from vaecli.options import AXES, BY_NAME, ROWS, build, command_words, differs
from vaecli.studies.sweep import Sweep

# between them, these set every option to other than its default (test_the_configs_set_every_option checks it)
CONFIGS = [
    TrainConfig(
        model=ModelConfig(latent_dim=7, hidden_layers=(64, 32), recon="gaussian"),
        lam=4.5,
        kl_warmup=2,
        free_bits=0.25,
        epochs=7,
        batch_size=64,
        lr=0.0123,
        lr_schedule="onecycle",
        seed=3,
        dataset="fashion-mnist",
        binarize=True,
        precision="bf16",
    ),
    TrainConfig(objective="iwae", k=5, compile=True, precision="fp32", lr_schedule="constant"),
    TrainConfig(capacity=3.0, capacity_epochs=2, epochs=4, lam=1 / 3, dataset="dsprites", split_seed=2),
    TrainConfig(objective="betatc", tc_weight=6.0, lam=2.0),
    TrainConfig(objective="dip2", dip_offdiag=4.0, dip_diag=4.0),
    TrainConfig(objective="factor", factor_gamma=30.0),
]


def test_every_config_field_is_an_option_with_help():
    settable = {f.name for f in fields(TrainConfig)} - {"model"} | {f.name for f in fields(ModelConfig)} - {
        "image_shape"  # the data set's
    }
    assert {row.field for row in ROWS} == settable
    assert all(row.spec.help for row in ROWS)
    assert {row.name for row in ROWS} <= set(TRAINING_OPTIONS)
    assert set(SWEEP_LISTS) | {"hidden", "lam"} == {row.name for row in AXES}


def test_the_configs_set_every_option():
    default = TrainConfig()
    unset = [row.name for row in ROWS if not any(differs(row, c, default) for c in CONFIGS)]
    assert not unset, f"add a value of {unset} to CONFIGS"


@pytest.mark.parametrize("config", CONFIGS, ids=["elbo-variants", "iwae", "capacity", "betatc", "dip", "factor"])
def test_a_config_survives_the_command_line_and_the_config_file(config, tmp_path):
    words = command_words(config)
    printed = invoke("train", *words, "--print-config")
    assert printed.exit_code == 0, printed.output
    path = tmp_path / "config.toml"
    path.write_text(printed.stdout)
    assert build(read_options(path)) == config
    assert printed.stdout == to_toml(config)
    again = invoke("train", "--config", path, "--print-config")
    assert again.stdout == printed.stdout


def test_a_runs_config_is_a_config_file(tmp_path):
    old = '{"batch_size":128,"binarize":false,"dataset":"mnist","epochs":20,"lam":1.0,"lr":0.001,'
    old += '"model":{"hidden_layers":[512,256],"image_shape":[28,28],"latent_dim":2,"recon":"bernoulli"},"seed":0}'
    (tmp_path / "old.json").write_text(old)  # a first-release run's config: fp32 at a constant rate
    config = build(read_options(tmp_path / "old.json"))
    assert config == TrainConfig.from_json(old) and config.digest() == TrainConfig.from_json(old).digest()


def test_a_run_folder_is_a_config_file(tiny_mnist, tmp_path):
    first = invoke("train", *FAST_TRAIN_ARGS, "--hidden", "3", "--data-dir", tiny_mnist, "--out", tmp_path / "run")
    assert first.exit_code == 0
    again = invoke("train", "--config", tmp_path / "run", "--data-dir", tiny_mnist, "--out", tmp_path / "run")
    assert again.exit_code == 0 and "reusing it" in again.stdout, again.output
    assert "hidden = 3\n" in invoke("train", "--config", tmp_path / "run", "--print-config").stdout


def test_the_command_line_wins_over_the_file(tmp_path):
    (tmp_path / "c.toml").write_text("hidden = 10\nlam = 4\nlayers = [64]\n")
    out = invoke("train", "--config", tmp_path / "c.toml", "--lam", "2", "--print-config").stdout
    assert "hidden = 10\nlam = 2.0\n" in out and "layers = [64]" in out


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("colour = 1\n", ["c.toml", "unknown key 'colour'"]),
        ('lam = "x"\n', ["c.toml", "'lam' must be a number"]),
        ("layers = 5\n", ["c.toml", "'layers' must be a list of whole numbers"]),
        ("lam = -1\n", ["c.toml", "'lam' must be at least 0"]),
        ("k = 5\n", ["c.toml", "'k' 5 is the importance-weighted bound's"]),
        ("lam = [\n", ["c.toml", "not valid TOML"]),
    ],
)
def test_a_bad_config_file_names_the_file_and_the_key(tmp_path, text, fragments):
    (tmp_path / "c.toml").write_text(text)
    one_line_error(invoke("train", "--config", tmp_path / "c.toml"), *fragments)


def test_library_errors_name_fields_and_the_command_line_names_flags(tiny_mnist):
    with pytest.raises(ConfigError, match="`kl_warmup` .* must be at most `epochs`"):
        TrainConfig(kl_warmup=5, epochs=2)
    line = one_line_error(invoke("train", "--kl-warmup", "5", "--epochs", "2", "--data-dir", tiny_mnist))
    assert "--kl-warmup (5 epochs) must be at most --epochs (2)" in line and "`" not in line
    line = one_line_error(invoke("train", "--objective", "iwae", "--hidden", "0"))
    assert "--hidden" in line


@pytest.mark.parametrize("debug", ["1", ""])
def test_vaecli_debug_shows_the_traceback_behind_the_error(debug, monkeypatch):
    monkeypatch.setenv("VAECLI_DEBUG", debug)
    result = run_vaecli("train", "--k", "5", "--print-config")
    assert result.returncode == 1 and "error: --k 5 is the importance-weighted bound's" in result.stderr
    assert ("Traceback (most recent call last)" in result.stderr) == bool(debug)
    assert ("ConfigError" in result.stderr) == bool(debug)


def test_integer_options_have_their_real_range():
    for args, flag in [(["--seed", str(2**64)], "--seed"), (["--epochs", str(2**70)], "--epochs")]:
        one_line_error(invoke("train", *args), flag, code=2)
    one_line_error(invoke("train", "--lr", "nan"), "Invalid value for --lr", "finite number > 0", code=2)


def test_a_sweeps_reproduce_line_trains_nothing_again(tiny_mnist, tmp_path):
    store, out = tmp_path / "store", tmp_path / "sweep"
    where = ["--data-dir", tiny_mnist, "--runs-dir", store, "--iw-samples", "2", "--device", "cpu"]
    first = invoke(
        "ablate",
        *["--free-bits", "0", "0.5", "--precision", "fp32", "--lr-schedule", "constant", "--batch-size", "32"],
        *["--binarize", "--layers", "16", "--epochs", "1", "--kl-warmup", "1", "--lr", "0.002", "--seeds", "0", "1"],
        *where,
        "--out",
        out,
    )
    assert first.exit_code == 0, first.output
    report = (out / "report.md").read_text()
    line = report.split("```bash\n")[1].split("\n```")[0]
    assert line.startswith("vaecli ablate ") and "--precision fp32" in line and "--lr-schedule constant" in line
    again = invoke(*line.split()[1:], *where, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert "(4 reused, 0 trained)" in again.stdout.replace("\n", " ")


def test_the_reproduce_line_names_every_option_of_the_base():
    base = CONFIGS[0]
    words = Sweep(base, lams=(1.0, 2.0)).command().split()
    for row in ROWS:
        if row.name not in ("lam", "seed") and differs(row, base, TrainConfig()):
            assert row.flag in words, row.flag
    assert BY_NAME["lam"].flag in words and words.count("--lam") == 1


SWEEP = """# the homework's Problem 2, small
hidden = [2, 3]
layers = [16]
epochs = 1
batch_size = 32
seeds = [0, 1]
"""


def test_ablate_reads_a_sweep_file_and_keeps_a_copy(tiny_mnist, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    where = ["--data-dir", tiny_mnist, "--runs-dir", tmp_path / "store", "--iw-samples", "2", "--device", "cpu"]
    first = invoke("ablate", "--config", tmp_path / "sweep.toml", *where, "--out", tmp_path / "one")
    assert first.exit_code == 0, first.output
    assert "4 members (0 reused, 4 trained)" in first.stdout.replace("\n", " ")
    assert "mean ± std over 2 seeds" in first.stdout
    assert (tmp_path / "one" / "sweep.toml").read_text() == SWEEP
    report = (tmp_path / "one" / "report.md").read_text()
    assert "sha256" in report and "vaecli ablate --config sweep.toml" in report
    assert "vaecli ablate --hidden 2 3 --seeds 0 1 --epochs 1 --layers 16 --batch-size 32" in report
    again = invoke("ablate", "--config", tmp_path / "one" / "sweep.toml", *where, "--out", tmp_path / "two")
    assert "4 members (4 reused, 0 trained)" in again.stdout.replace("\n", " "), again.output
    one_seed = invoke("ablate", "--config", tmp_path / "sweep.toml", "--seeds", "0", *where, "--out", tmp_path / "3")
    assert "2 members (2 reused, 0 trained)" in one_seed.stdout.replace("\n", " ") and "± std" not in one_seed.stdout


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("hidden = []\n", "'hidden' lists no values to compare"),
        ('seeds = "0"\n', "'seeds' must be a list of whole numbers"),
        ("free_bits = [0, -1]\nhidden = [2]\n", "'free_bits' must be at least 0"),
        ("hidden = [2, 2]\n", "'hidden' lists a value twice"),
    ],
)
def test_a_bad_sweep_file_names_the_file_and_the_key(tiny_mnist, tmp_path, text, fragment):
    (tmp_path / "s.toml").write_text(text)
    one_line_error(invoke("ablate", "--config", tmp_path / "s.toml", "--data-dir", tiny_mnist), "s.toml", fragment)
