"""Objectives beyond the homework's loss: KL warm-up, free bits, capacity and the importance-weighted bound."""

import math
import re
from dataclasses import replace

import pytest
import torch

from tests.conftest import StopAt, invoke, one_line_error
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.core.loss import (
    elbo_objective,
    iwae_objective,
    kl_divergence,
    kl_divergence_per_dim,
    log_posterior,
    log_prior,
    reconstruction_nll,
    vae_loss,
)
from vaecli.core.model import VAE
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.loop import train, train_stacked
from vaecli.engine.state import Stopped
from vaecli.engine.steps import build_model, schedule
from vaecli.errors import ConfigError
from vaecli.store.runs import run_name

# fp32: exact comparisons must not depend on this CPU's bfloat16 support; 64 images = 4 steps of 16
BASE = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(16,)), epochs=3, batch_size=16, precision="fp32")
FP32_ARGS = ["--layers", "16", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--precision", "fp32"]


def sample(model: VAE, x: torch.Tensor, k: int, seed: int = 0):
    """The decoding of k samples of every image: (out, eps (k, B, H))."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = model.encode(x)
    eps = torch.randn((k, *mu.shape), generator=g)
    return model(x, eps=eps), eps


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the objectives themselves, on synthetic tensors ------------------------------------------------


@torch.no_grad()
def test_iwae_with_one_sample_has_the_elbo_as_its_expectation():
    """IW-1 = log p(x|z) + log p(z) - log q(z|x) at z ~ q; the ELBO with the closed-form KL is
    E_q[log p(x|z)] - KL. With the same z, their difference per draw has mean 0: tested within 4 standard errors."""
    torch.manual_seed(0)
    model, x = VAE(ModelConfig(latent_dim=3, hidden_layers=(16,))), torch.rand(8, 784)
    out, eps = sample(model, x, k=20000)
    log_px_z = -reconstruction_nll(out.logits, x, "bernoulli")  # (k, B)
    iw1 = log_px_z + log_prior(out.z) - log_posterior(eps, out.logvar)  # one-sample bounds
    elbo = log_px_z - kl_divergence(out.mu, out.logvar)  # closed-form KL
    diff = (iw1 - elbo).double()
    standard_error = diff.std(0) / math.sqrt(len(diff))
    assert torch.all(diff.mean(0).abs() < 4 * standard_error)
    assert torch.all(standard_error > 0)  # a real Monte Carlo comparison, not 0 == 0
    # and the bound as training computes it is that mean's negative
    terms = iwae_objective(out, x, eps, "bernoulli")
    assert float(terms.loss) == pytest.approx(-float(torch.logsumexp(iw1, 0).sub(math.log(20000)).mean()), rel=1e-6)


@torch.no_grad()
def test_more_samples_tighten_the_bound():
    torch.manual_seed(1)
    model, x = VAE(ModelConfig(latent_dim=2, hidden_layers=(16,))), torch.rand(16, 784)
    bounds = []
    for k in (1, 50):
        out, eps = sample(model, x, k, seed=k)
        bounds.append(float(iwae_objective(out, x, eps, "bernoulli").loss))
    assert bounds[1] < bounds[0]  # -IW-50 <= -IW-1 (up to noise, far within it here)


def test_zero_free_bits_and_no_capacity_are_the_homeworks_loss_bit_for_bit():
    torch.manual_seed(2)
    model, x = VAE(ModelConfig(latent_dim=4, hidden_layers=(16,))), torch.rand(16, 784)
    out = model(x)
    for lam in (1.0, 5.0, 40.0):
        plain = vae_loss(out, x, lam, "bernoulli")
        terms = elbo_objective(out, x, lam, "bernoulli", free_bits=0.0, capacity=None)
        assert torch.equal(terms.loss, plain.total) and torch.equal(terms.recon, plain.recon)
    # and the config of today's objective is today's config: the same JSON, hash and run name as before
    zero = TrainConfig(kl_warmup=0, free_bits=0.0, capacity=0.0, capacity_epochs=0, objective="elbo", k=1)
    assert zero == TrainConfig() and zero.to_json() == TrainConfig().to_json()
    old = TrainConfig(lr_schedule="constant")  # the recipe of then
    assert run_name(old) == "h2-lam1-e20-s0-05a0f743"  # the name every 0.1 store has for it
    before = TrainConfig().to_dict()
    assert not {"objective", "k", "kl_warmup", "free_bits", "capacity", "capacity_epochs"} & set(before)
    assert TrainConfig.from_dict(before) == TrainConfig()


def test_free_bits_hold_each_dimension_and_stop_its_kl_gradient_below_them():
    torch.manual_seed(3)
    mu = torch.zeros(32, 3)
    mu[:, 0] = 2 * torch.randn(32)  # dimension 0 carries ~2 nats, 1 and 2 nearly none
    mu.requires_grad_()
    logvar = torch.zeros(32, 3, requires_grad=True)
    from vaecli.core.model import VAEOutput

    out = VAEOutput(torch.zeros(32, 784), mu, logvar, mu)
    terms = elbo_objective(out, torch.zeros(32, 784), 1.0, "bernoulli", free_bits=0.5)
    per_dim = kl_divergence_per_dim(mu, logvar).mean(0)
    held = float((terms.loss - terms.recon).detach())
    assert held == pytest.approx(float(per_dim.detach().clamp_min(0.5).sum()))
    assert held > float(terms.kl.detach())  # the held dimensions count 0.5 each
    terms.loss.backward()
    assert torch.count_nonzero(mu.grad[:, 1:]) == 0 and torch.count_nonzero(mu.grad[:, 0]) > 0


def test_capacity_holds_the_kl_near_c():
    torch.manual_seed(4)
    x = torch.rand(8, 784)
    with torch.no_grad():
        out = VAE(ModelConfig(latent_dim=2, hidden_layers=(8,)))(x)
    terms = elbo_objective(out, x, 10.0, "bernoulli", capacity=25.0)
    assert float(terms.loss) == pytest.approx(float(terms.recon + 10.0 * (terms.kl - 25.0).abs()))


def test_the_schedules_rise_linearly_step_by_step():
    config = replace(BASE, kl_warmup=2)
    assert [schedule(config, t, 4)[0] for t in (0, 1, 4, 8, 100)] == [0.0, 0.125, 0.5, 1.0, 1.0]
    capped = replace(BASE, capacity=5.0, capacity_epochs=1)
    assert [schedule(capped, t, 4)[1] for t in (0, 2, 4, 9)] == [0.0, 2.5, 5.0, 5.0]
    assert schedule(replace(BASE, capacity=5.0), 0, 4) == (1.0, 5.0)  # no ramp: C from the start


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"objective": "iwae", "k": 5, "lam": 5.0}, "`objective` iwae cannot take `lam`"),
        ({"objective": "iwae", "free_bits": 1.0}, "cannot take `free_bits`"),
        ({"objective": "iwae", "kl_warmup": 1}, "cannot take `kl_warmup`"),
        ({"k": 5}, "add `objective` iwae"),
        ({"free_bits": 1.0, "capacity": 3.0}, "use one of them"),
        ({"capacity_epochs": 2}, "give `capacity` C too"),
        ({"capacity": 3.0, "kl_warmup": 1}, "drop `kl_warmup`"),
        ({"kl_warmup": 9}, "at most `epochs`"),
        ({"free_bits": -1.0}, "`free_bits` must be at least 0"),
        ({"kl_warmup": 1, "compile": True}, "`compile` cannot follow a ramp"),
    ],
)
def test_combinations_without_a_meaning_are_refused(changes, fragment):
    """The library names the fields (in backquotes); the CLI turns them into flags (tests/test_options.py)."""
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        replace(BASE, **changes)


# --- training with them: lone, stacked, interrupted -----------------------------------------------


VARIANTS = {
    "warm-up": {"kl_warmup": 2},
    "free bits": {"free_bits": 1.0, "lam": 5.0},
    "capacity": {"capacity": 3.0, "capacity_epochs": 2, "lam": 5.0},
    "iwae": {"objective": "iwae", "k": 5},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_every_objective_trains_and_reports_what_it_optimised(tiny_mnist, name):
    data = load_dataset("mnist", tiny_mnist)
    config = replace(BASE, **VARIANTS[name])
    result = train(config, data, device="cpu")
    first, last = result.history[0], result.history[-1]
    assert last.train_objective is not None and math.isfinite(last.test_objective)
    row = last.to_dict()
    assert {"train_objective", "test_objective", "train_neg_elbo", "test_recon", "test_kl"} <= set(row)
    if name == "free bits":  # each of the 2 dimensions counts as at least 1 nat
        assert last.test_objective >= last.test.recon + 5.0 * 2 * 1.0 - 1e-6
    if name == "warm-up":  # the first epoch's KL weight rose from 0 to 1/2: its objective is below recon + KL
        assert first.train_objective < first.train.neg_elbo
    if name == "iwae":  # the IW-5 bound is tighter than the ELBO on the test set
        assert last.test_objective < last.test.neg_elbo


@pytest.mark.parametrize("name", VARIANTS)
def test_stacked_members_end_as_alone_with_every_objective(tiny_mnist, name):
    data = load_dataset("mnist", tiny_mnist)
    config = replace(BASE, epochs=2, **VARIANTS[name])
    # different seeds and latent sizes (the H = 2 member is padded to 3)
    configs = [config, replace(config, seed=1, model=replace(config.model, latent_dim=3))]
    together = train_stacked(configs, data, device="cpu")
    for t, c in zip(together, configs, strict=True):
        alone = train(c, data, device="cpu")
        assert t.final.test_objective == pytest.approx(alone.final.test_objective, rel=1e-4)
        assert t.final.train_objective == pytest.approx(alone.final.train_objective, rel=1e-4)


# the disentanglement objectives: autograd's step, never stacked; (config fields, what `info` says, run name part)
DISENTANGLING = {
    "betatc": ({"objective": "betatc", "tc_weight": 6.0}, "betatc TC weight 6", "-tc6-"),
    "dip1": (
        {"objective": "dip1", "dip_offdiag": 2.0, "dip_diag": 20.0},
        "dip1 off-diagonal 2, diagonal 20",
        "-dip1od2d20-",
    ),
    "dip2": (
        {"objective": "dip2", "dip_offdiag": 5.0, "dip_diag": 5.0},
        "dip2 off-diagonal 5, diagonal 5",
        "-dip2od5d5-",
    ),
    "factor": ({"objective": "factor", "factor_gamma": 20.0}, "factor gamma 20", "-factor20-"),
}
WEIGHTS = {"betatc": "tc_weight", "dip1": "dip_diag", "dip2": "dip_offdiag", "factor": "factor_gamma"}


@pytest.mark.parametrize("name", ["warm-up", "iwae", *DISENTANGLING])
def test_an_interrupted_fit_resumes_bit_for_bit_with_its_schedule(tiny_mnist, tmp_path, name):
    from vaecli.store.checkpoint import load_state, save_state

    data = load_dataset("mnist", tiny_mnist)
    config = replace(BASE, **(VARIANTS[name] if name in VARIANTS else DISENTANGLING[name][0]))
    whole = train(config, data, device="cpu")
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train(config, data, device="cpu", stop=stop, observer=StopAt(stop, 2, 3))
    save_state(tmp_path, info.value.state)  # through the file: FactorVAE's discriminator travels in it
    resumed = train(config, data, device="cpu", resume=load_state(tmp_path))
    assert same(whole.model.state_dict(), resumed.model.state_dict())
    assert [r.train_objective for r in whole.history] == [r.train_objective for r in resumed.history]
    assert [r.test for r in whole.history] == [r.test for r in resumed.history]


@pytest.mark.parametrize("name", DISENTANGLING)
def test_the_disentanglement_objectives_are_named_and_refused_apart(name):
    from vaecli.engine.steps import stackable, written_step

    fields, described, part = DISENTANGLING[name]
    config = TrainConfig(**fields)
    assert part in run_name(config) and described in config.describe()
    assert written_step(config, torch.device("cpu"), "fp32") is None and not stackable(config)
    assert TrainConfig().digest() == "48abe01d"  # their fields stay out of other runs' JSON and names
    with pytest.raises(ConfigError, match="add `objective` "):
        TrainConfig(**{WEIGHTS[name]: 3.0})
    with pytest.raises(ConfigError, match="cannot take `free_bits`"):
        TrainConfig(**fields, free_bits=1.0)


@pytest.mark.parametrize("name", DISENTANGLING)
def test_the_disentanglement_objectives_from_the_command_line(tiny_mnist, tmp_path, name):
    fields, described, _ = DISENTANGLING[name]
    flags = [
        w
        for key, value in fields.items()
        for w in (f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else value)
    ]
    out = tmp_path / name
    result = invoke("train", *FP32_ARGS, *flags, "--data-dir", tiny_mnist, "--out", out)
    assert result.exit_code == 0, result.output
    assert described in " ".join(invoke("info", out).stdout.split())
    weight = f"--{WEIGHTS[name].replace('_', '-')}"
    one_line_error(invoke("train", weight, "3", "--data-dir", tiny_mnist), weight, "add --objective")


def test_an_old_resume_file_without_the_objective_sum_still_continues(tiny_mnist, tmp_path):
    from safetensors.torch import load_file, save_file

    from vaecli.store.checkpoint import RESUME_FILE, load_state, save_state

    data = load_dataset("mnist", tiny_mnist)
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train(BASE, data, device="cpu", stop=stop, observer=StopAt(stop, 1, 2))
    path = save_state(tmp_path, info.value.state)
    tensors = load_file(path)
    tensors["sums"] = tensors["sums"][:2]  # as vaecli wrote it before: recon and KL
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(tmp_path / RESUME_FILE), metadata=metadata)
    state = load_state(tmp_path)
    recon, kl, objective = state.sums.tolist()
    assert objective == pytest.approx(recon + BASE.lam * kl)
    train(BASE, data, device="cpu", resume=state)


def test_build_model_is_the_same_whatever_the_objective():
    a, b = build_model(BASE), build_model(replace(BASE, objective="iwae", k=50))
    assert same(a.state_dict(), b.state_dict())


# --- the command line ---------------------------------------------------------------------------


def test_train_with_free_bits_shows_the_objective_and_names_it(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", *FP32_ARGS, "--lam", "40", "--free-bits", "1", "--data-dir", tiny_mnist, "--out", out)
    assert result.exit_code == 0, result.output
    assert "obj" in result.stdout and "free bits 1" in result.stdout
    info = invoke("info", out)
    assert "objective" in info.stdout and "elbo, free bits 1" in info.stdout
    named = invoke("train", *FP32_ARGS, "--lam", "40", "--free-bits", "1", "--data-dir", tiny_mnist)
    assert named.exit_code == 0, named.output
    (folder,) = (tmp_path / "store").iterdir()  # the store's name for it shows the objective
    assert folder.name.startswith("h2-lam40-fb1-e2-s0-")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--objective", "iwae", "--k", "5", "--lam", "5"], "cannot take --lam"),
        (["--free-bits", "nan"], "must be a finite number ≥ 0, got nan"),
        (["--k", "3"], "add --objective iwae"),
    ],
)
def test_meaningless_options_give_one_line(tiny_mnist, args, fragment):
    one_line_error(invoke("train", *FP32_ARGS, *args, "--data-dir", tiny_mnist), fragment)


def test_ablate_sweeps_any_objective_option_as_it_sweeps_lam(tiny_mnist, tmp_path):
    import json

    out = tmp_path / "fb"
    args = ["ablate", "--lam", "40", "--free-bits", "0", "1", *FP32_ARGS, "--iw-samples", "3", "--data-dir", tiny_mnist]
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert "free bits" in result.stdout and "2 members (0 reused, 2 trained)" in result.stdout.replace("\n", " ")
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [(r["lam"], r["free bits"]) for r in rows] == [(40.0, 0.0), (40.0, 1.0)]
    report = (out / "report.md").read_text()
    assert "--free-bits 0 1" in report and "free bits=1: elbo, free bits 1" in report
    assert (out / "samples.png").is_file()

    common = ["ablate", "--objective", "iwae", *FP32_ARGS, "--iw-samples", "3", "--data-dir", tiny_mnist]
    iwae = invoke(*common, "--k", "1", "3", "--out", tmp_path / "iwae")
    assert iwae.exit_code == 0, iwae.output
    text = (tmp_path / "iwae" / "report.md").read_text()
    assert "k=1: iwae k=1" in text and "k=3: iwae k=3" in text
    stacked = invoke(*common, "--k", "3", "--hidden", "2", "3", "--stack", "on", "--out", tmp_path / "stacked",
                     "--runs-dir", tmp_path / "fresh")  # fmt: skip
    assert stacked.exit_code == 0, stacked.output
    assert (
        "members 1-2/2 stacked" in stacked.stdout
        and "Objective: iwae k=3." in (tmp_path / "stacked" / "report.md").read_text()
    )


def test_the_burda_reproduction_script_prints_its_table_beside_the_papers(tiny_mnist, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ROOT / "examples" / "burda_iwae.py"
    args = ["--data-dir", tiny_mnist, "--epochs", "1", "--iw-samples", "5", "--device", "cpu"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "VAECLI_RUNS": str(tmp_path / "store")}
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    table = {line[:14].strip(): line[14:].split() for line in result.stdout.splitlines() if "-e1-s0-" in line}
    assert {name: row[1] for name, row in table.items()} == {
        "VAE": "86.76",
        "IWAE, k = 5": "85.54",
        "IWAE, k = 50": "84.78",
    }  # ours, the paper's, the difference, the run
    assert all(math.isfinite(float(row[0])) for row in table.values())
    assert "IWAE, k = 50 beats the VAE by" in result.stdout and "(the paper: 1.98)" in result.stdout
    assert len(list((tmp_path / "store").glob("*/model.safetensors"))) == 3
