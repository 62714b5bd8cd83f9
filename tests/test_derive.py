"""vaecli derive: the quadrature alone, the checks passing on small models, and failing when the math is broken."""

import math
import re
from statistics import NormalDist

import pytest
import torch

from tests.conftest import invoke, one_line_error
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import loss
from vaecli.core.model import VAE
from vaecli.errors import ConfigError
from vaecli.studies import checks, derive, identities, quadrature
from vaecli.studies.identities import Check, SweepRow
from vaecli.studies.quadrature import Grid
from vaecli.views import export

FAST_DERIVE_ARGS = ["--layers", "32", "16", "--epochs", "1", "--device", "cpu"]


def small_vae(latent_dim: int = 2, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(latent_dim=latent_dim, hidden_layers=(32,))).eval()


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(784, generator=torch.Generator().manual_seed(seed))


def by_name(checks, fragment):
    (check,) = [c for c in checks if fragment in c.name]
    return check


# --------------------------------------------------------------------------- the quadrature on its own


def constant_decoder(latent_dim: int) -> VAE:
    """A VAE whose decoder ignores z: log p(x|z) is one number c, so log p(x) = c + log P(z in the box)."""
    model = quadrature.as_float64(small_vae(latent_dim))
    with torch.no_grad():
        for layer in model.decoder:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
    return model


def test_grid_nodes_are_cell_centres():
    grid = Grid((-1.0, 0.0), (1.0, 3.0), (4, 3))
    assert grid.spacing == (0.5, 1.0) and grid.cell == 0.5 and grid.size == 12
    nodes = grid.nodes()
    assert nodes.shape == (12, 2)
    assert nodes[0].tolist() == [-0.75, 0.5] and nodes[-1].tolist() == [0.75, 2.5]


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_quadrature_integrates_the_prior_exactly(latent_dim):
    model, x = constant_decoder(latent_dim), image().double()
    c = float(quadrature.log_likelihood(model, x, torch.zeros(1, latent_dim))[0])
    wide = quadrature.quadrature(model, x, Grid((-9.0,) * latent_dim, (9.0,) * latent_dim, (120,) * latent_dim))
    assert wide.log_px == pytest.approx(c, abs=1e-9)
    assert wide.mean.abs().max() < 1e-9 and (wide.var - 1).abs().max() < 1e-6
    # a box holding only z > 1 in every dimension: log p(x) = c + H log P(N(0, 1) > 1)
    tail = quadrature.quadrature(model, x, Grid((1.0,) * latent_dim, (9.0,) * latent_dim, (100,) * latent_dim))
    expected = c + latent_dim * math.log(1 - NormalDist().cdf(1.0))
    assert tail.log_px == pytest.approx(expected, abs=1e-3)
    assert tail.edge_mass > 0.01  # the box cuts through p(z|x), and says so


def test_expectation_under_q_of_polynomials():
    mu, logvar = torch.tensor([0.3, -2.0], dtype=torch.float64), torch.tensor([-1.0, 0.5], dtype=torch.float64)
    sd2 = logvar.exp()
    second = quadrature.expect_gaussian(lambda z: z.pow(2).sum(dim=1), mu, logvar)
    assert second == pytest.approx(float((mu**2 + sd2).sum()), abs=1e-9)
    assert quadrature.expect_gaussian(lambda z: z[:, 0], mu, logvar) == pytest.approx(0.3, abs=1e-12)


def test_choose_grid_holds_q_and_the_posterior(good_grid):
    model, x = quadrature.as_float64(small_vae()), image().double()
    mu, logvar = identities.encode(model, x)
    grid = good_grid
    sd = (0.5 * logvar).exp()
    assert all(lo <= m - 8 * s for lo, m, s in zip(grid.lo, mu.tolist(), sd.tolist(), strict=True))
    assert all(hi >= m + 8 * s for hi, m, s in zip(grid.hi, mu.tolist(), sd.tolist(), strict=True))
    assert max(grid.spacing) <= float(sd.min()) / 4
    assert quadrature.quadrature(model, x, grid).edge_mass < 1e-12


def test_quadrature_refuses_more_than_two_latents():
    model = small_vae(3)
    with pytest.raises(ConfigError, match="latent_dim <= 2"):
        quadrature.choose_grid(model, image(), torch.zeros(3), torch.zeros(3))


# --------------------------------------------------------------------------- the checks pass on small models


@pytest.fixture(scope="module")
def untrained_checks():
    """Every check on an untrained H = 2 VAE, computed once for the tests that read them."""
    model = small_vae()
    return identities.identity_checks(model, image()) + identities.kl_checks(model, image())


@pytest.fixture(scope="module")
def good_grid():
    model, x = small_vae(), image()
    return quadrature.choose_grid(quadrature.as_float64(model), x.double(), *identities.encode(model, x))


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_every_check_passes_on_an_untrained_vae(latent_dim, untrained_checks):
    model = small_vae(latent_dim)
    if latent_dim == 2:
        checks = untrained_checks
    else:
        checks = identities.identity_checks(model, image()) + identities.kl_checks(model, image())
    failed = [(c.name, c.difference, c.tolerance) for c in checks if not c.passed]
    assert not failed
    identity = by_name(checks, "ELBO + KL")
    assert abs(identity.difference) < 1e-4  # well inside the stated tolerance
    assert all(c.difference < 0 for c in checks if c.name.startswith("ELBO ≤"))


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_the_importance_weighted_bounds_rise_to_log_px(latent_dim):
    checks = identities.iw_checks(small_vae(latent_dim), image())
    assert [c.passed for c in checks] == [True] * 6, [(c.name, c.difference, c.tolerance) for c in checks]
    chain = [c for c in checks if c.name.startswith("𝓛_") and "≤ 𝓛_" in c.name]
    assert len(chain) == 3 and all(c.difference <= 0 for c in chain)  # strictly rising here, not just within noise
    gap = by_name(checks, "twice its second-order prediction")
    assert 0 <= gap.left <= gap.right


def test_a_bound_with_the_wrong_proposal_density_fails(monkeypatch):
    """log q without its normalising constant is no longer q's density: 𝓛_1 is no longer the ELBO."""
    monkeypatch.setattr(loss, "log_posterior", lambda eps, logvar: -0.5 * (eps.pow(2) + logvar).sum(-1))
    checks = identities.iw_checks(small_vae(2), image())
    assert not by_name(checks, "ELBO = 𝓛_1").passed


def test_the_bound_is_nearly_tight_for_a_gaussian_fit_to_the_posterior(untrained_checks):
    checks = untrained_checks
    fit, prior = by_name(checks, "Gaussian fit"), by_name(checks, "q = the prior")
    assert -0.5 < fit.difference < 0 and prior.difference < fit.difference


def test_check_relations():
    def check(left, right, relation, tol):
        return Check(1, "c", "l", left, "r", right, relation, tol)

    assert check(1.0, 1.0005, "=", 1e-3).passed and not check(1.0, 1.01, "=", 1e-3).passed
    assert check(1.0, 2.0, "≤", 0).passed and not check(2.0, 1.0, "≤", 0.5).passed
    assert check(2.0, 1.0, ">", 0).passed and not check(1.0, 1.0, ">", 0).passed
    assert not check(float("nan"), 1.0, "=", 1.0).passed
    assert check(3.0, 1.0, "=", 0).to_dict()["difference"] == 2.0


# --------------------------------------------------------------------------- broken math fails


def test_a_kl_with_a_sign_error_fails(monkeypatch, good_grid):
    model, x = small_vae(), image()
    assert all(c.passed for c in identities.kl_checks(model, x))
    monkeypatch.setattr(loss, "kl_divergence", lambda mu, logvar: 0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), 1))
    assert not any(c.passed for c in identities.kl_checks(model, x))
    assert not by_name(identities.identity_checks(model, x, good_grid), "ELBO + KL").passed


def test_a_kl_missing_its_mean_term_fails(monkeypatch):
    monkeypatch.setattr(loss, "kl_divergence", lambda mu, logvar: -0.5 * torch.sum(1 + logvar - logvar.exp(), 1))
    assert not by_name(identities.kl_checks(small_vae(), image()), "far from the prior").passed


def test_too_coarse_a_grid_fails(good_grid):
    coarse = Grid(good_grid.lo, good_grid.hi, (5, 5))
    checks = identities.identity_checks(small_vae(), image(), coarse)
    assert not by_name(checks, "ELBO + KL").passed


def test_a_shifted_grid_fails(good_grid):
    half = 0.5 * (good_grid.hi[0] - good_grid.lo[0])
    checks = identities.identity_checks(small_vae(), image(), good_grid.shifted(half))
    assert not by_name(checks, "outer cells").passed
    assert not by_name(checks, "ELBO + KL").passed
    assert not by_name(checks, "importance sampling").passed


def test_a_prior_without_its_normalising_constant_fails(monkeypatch, good_grid):
    """log p(z) missing -H/2 log 2π shifts log p(x) by +log 2π but leaves the closed-form ELBO alone."""
    model, x = small_vae(), image()
    monkeypatch.setattr(quadrature, "log_prior", lambda z: -0.5 * z.pow(2).sum(dim=1))
    identity = by_name(identities.identity_checks(model, x, good_grid), "ELBO + KL")
    assert not identity.passed and identity.difference == pytest.approx(math.log(2 * math.pi), abs=1e-3)
    assert not identities.kl_checks(model, x)[0].passed


# --------------------------------------------------------------------------- part 3


def test_lagrangian_checks_compare_neighbours():
    rows = [SweepRow(lam, kl, 100.0, "r", False) for lam, kl in ((10, 1.0), (1, 5.0), (5, 2.0), (40, 1.2))]
    checks = identities.lagrangian_checks(rows)
    assert [c.passed for c in checks] == [True, True, False]
    assert "λ = 10 → 40" in checks[-1].name


def test_lam_sweep_reuses_the_store_and_kl_falls(tiny_mnist, tmp_path):
    from vaecli.core.data import load_dataset

    base = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(32, 16)), epochs=1, batch_size=16)
    data = load_dataset("mnist", tiny_mnist)
    rows = checks.lam_sweep(base, data=data, store=tmp_path / "s", device="cpu")
    assert [r.lam for r in rows] == [1, 5, 10, 40] and not any(r.reused for r in rows)
    assert all(c.passed for c in identities.lagrangian_checks(rows)), [(r.lam, r.kl) for r in rows]
    again = checks.lam_sweep(base, (40, 1), data=data, store=tmp_path / "s", device="cpu")
    assert [r.lam for r in again] == [1, 40] and all(r.reused for r in again)
    assert again[0].kl == rows[0].kl
    # data the store cannot name (synthetic) are trained in memory: the same numbers, nothing written
    memory = checks.lam_sweep(base, (1,), data=data, in_memory=True, device="cpu")
    assert memory[0].run == "in memory" and memory[0].kl == pytest.approx(rows[0].kl)
    assert len(list((tmp_path / "s").iterdir())) == 4


# --------------------------------------------------------------------------- the content and its exports


def all_prose():
    for p in derive.PARTS:
        yield from (p.title, p.intro, p.outro)
        for step in p.steps:
            yield step.why


def test_every_step_has_formula_text_and_reason():
    assert [p.number for p in derive.PARTS] == [1, 2, 3, 4, 5]
    for p in derive.PARTS:
        assert len(p.steps) >= 5
        for step in p.steps:
            assert step.latex.strip() and step.text.strip() and step.why.strip()
            assert step.latex.count("{") == step.latex.count("}")
            assert step.latex.count(r"\left") == step.latex.count(r"\right")


KNOWN_MACROS = set(
    r"""\Rightarrow \Vert \epsilon \frac \ge \lambda \lbrace \le \left \log \mathbb \mathcal \mathrel
    \mathrm \max \mid \mu \nabla \odot \operatorname \phi \pi \quad \rbrace \right \sigma \sim \sum
    \text \tfrac \theta \beta \cdot \int \times \to \operatorname* \ldots \approx \ge \mathrm \in
    \prod \alpha \gamma""".split()
)


def test_every_latex_macro_is_a_real_one():
    """Catches strings glued together into a made-up macro, like '\\quad' + 'r' = '\\quadr'."""
    latex = [s.latex for p in derive.PARTS for s in p.steps] + [export.math_latex(t) for t in all_prose()]
    for formula in latex:
        assert set(re.findall(r"\\[A-Za-z]+", formula)) <= KNOWN_MACROS, formula


def test_markdown_math_is_safe_from_markdown_escapes():
    """A backslash before punctuation (\\, \\{ \\|) may be eaten by a Markdown renderer before the math is."""
    latex = [s.latex for p in derive.PARTS for s in p.steps] + [export.math_latex(t) for t in all_prose()]
    for formula in latex:
        assert not re.search(r"\\[^A-Za-z]", formula), formula


def test_prose_math_converts_to_plain_ascii_latex():
    for text in all_prose():
        for is_math, piece in export.segments(text):
            out = export.math_latex(piece) if is_math else export.text_latex(piece)
            assert out.isascii(), (piece, out)
    assert export.math_latex("q_φ(z|x) = N(μ, σ²)") == r"q_\phi (z\mid x) = \mathcal{N}(\mu , \sigma ^2)"


def test_markdown_export_holds_every_step_and_the_results():
    findings = identities.Findings(
        checks=[Check(1, "log p(x) = ELBO + KL(q ‖ p(z|x))", "a", -100.0, "b", -100.0001, "=", 1e-3)],
        context={1: ["model: m", "image: i"]},
    )
    text = export.markdown((1,), findings)
    assert text.count("$$") == 2 * len(derive.PARTS[0].steps)
    assert "## Part 1." in text and "## Part 2." not in text
    assert r"p(z\|x)) | a = -100.000000 |" in text and r"| \|d\| ≤ 1.0e-03 | PASS |" in text
    for inline in re.findall(r"(?<!\$)\$([^$\n]+)\$(?!\$)", text):
        assert inline == inline.strip()  # GitHub needs $x$, not $ x $


def test_latex_export_is_a_whole_document():
    text = export.latex(derive.PART_NUMBERS)
    assert text.startswith(r"\documentclass") and text.rstrip().endswith(r"\end{document}")
    assert text.count(r"\[") == text.count(r"\]") == sum(len(p.steps) for p in derive.PARTS)
    body = text.split(r"\begin{document}")[1]
    assert body.isascii() and "-{}-recon" in body


# --------------------------------------------------------------------------- the command


def test_derive_without_checks_shows_every_part():
    result = invoke("derive", "--no-checks")
    assert result.exit_code == 0, result.output
    for p in derive.PARTS:
        assert f"Part {p.number}" in result.stdout
    assert "−½ Σ_j ( 1 + log σ_j² − μ_j² − σ_j² )" in result.stdout
    assert "checks passed" not in result.stdout


@pytest.fixture
def tiny_run(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *FAST_DERIVE_ARGS, "--data-dir", tiny_mnist, "--out", out, "-q").exit_code == 0
    return out


def test_derive_checks_a_model_and_exports_markdown(tiny_run, tiny_mnist, tmp_path):
    result = invoke("derive", "1", "--model", tiny_run, "--data-dir", tiny_mnist, "--out", tmp_path / "d.md")
    assert result.exit_code == 0, result.output
    assert "All 9 checks passed" in result.stdout
    text = (tmp_path / "d.md").read_text()
    assert "## Part 1." in text and "| PASS |" in text and "MNIST test image #0" in text


def test_derive_part_2_on_synthetic_images(tiny_run):
    result = invoke("derive", "2", "--synthetic", "--model", tiny_run)
    assert result.exit_code == 0, result.output
    assert "synthetic bar images (--synthetic)" in result.stdout and "All 2 checks passed" in result.stdout


def test_derive_exits_1_when_the_loss_has_a_sign_error(tiny_run, tiny_mnist, monkeypatch):
    monkeypatch.setattr(loss, "kl_divergence", lambda mu, logvar: 0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), 1))
    result = invoke("derive", "2", "--model", tiny_run, "--data-dir", tiny_mnist)
    assert result.exit_code == 1 and "FAIL" in result.stdout and "2 of 2 checks failed" in result.stdout


def test_derive_falls_back_to_synthetic_images_without_mnist(tiny_run):
    result = invoke("derive", "2", "--model", tiny_run)
    assert result.exit_code == 0, result.output
    assert "synthetic bar images: no MNIST in" in " ".join(result.stdout.split())


def test_derive_skips_the_quadrature_for_h_above_2(tiny_mnist, tmp_path):
    out = tmp_path / "h3"
    assert (
        invoke("train", *FAST_DERIVE_ARGS, "--hidden", "3", "--data-dir", tiny_mnist, "--out", out, "-q").exit_code == 0
    )
    result = invoke("derive", "1", "--model", out, "--data-dir", tiny_mnist)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "skipped" in out and "H = 3; quadrature over z needs H ≤ 2" in out and "All 0 checks" not in out


def test_derive_part_3_trains_then_reuses_the_runs(tiny_mnist, tmp_path):
    args = ["derive", "3", *FAST_DERIVE_ARGS]
    first = invoke(*args, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s", "--format", "latex", "--out", "d.tex")
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "s").iterdir())) == 4
    assert r"\begin{tabular}" in (tmp_path / "d.tex").read_text()
    second = invoke(*args, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "s", "--lams", "1", "40")
    assert second.exit_code == 0 and "2 of 2 reused" in " ".join(second.stdout.split())


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--format", "markdown"], ["--out"]),
        (["--out", "notes.txt"], ["notes.txt", ".md or .tex"]),
        (["6"], ["part"]),
        (["--hidden", "3"], ["--hidden"]),
        (["--lams", "1"], ["--lams", "two"]),
        (["--model", "nowhere"], ["nowhere"]),
        (["--data-dir", "nowhere"], ["nowhere"]),
    ],
)
def test_bad_input_gives_one_line(args, fragments):
    one_line_error(invoke("derive", *args), *fragments)


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.slow
def test_every_check_passes_on_a_real_mnist_model(mnist_dir):
    from vaecli.core.data import load_dataset
    from vaecli.engine.loop import train

    data = load_dataset("mnist", mnist_dir)
    config = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(256,)), epochs=1)
    model = train(config, data, device="cpu").model
    x, what = checks.pick_image(data, 0)
    assert "label 7" in what
    results = identities.identity_checks(model, x) + identities.kl_checks(model, x) + identities.iw_checks(model, x)
    assert all(c.passed for c in results), [(c.name, c.difference) for c in results if not c.passed]
    assert abs(by_name(results, "ELBO + KL").difference) < 1e-3


def test_the_kl_parts_by_quadrature_add_up_and_the_estimator_finds_them():
    from vaecli.studies.decomposition import decomposition_checks, parts_by_quadrature

    g = torch.Generator().manual_seed(0)
    mu = 1.5 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    mu[:, 1] += 0.5 * mu[:, 0]  # correlated codes: a total correlation to find
    logvar = torch.full((64, 2), -2.0, dtype=torch.float64)
    parts = parts_by_quadrature(mu, logvar)
    assert float(sum(parts)) == pytest.approx(float(loss.kl_divergence(mu, logvar).mean()), abs=1e-4)
    assert 0.1 < float(parts.tc) and 0 < float(parts.mi) < math.log(64)
    same = parts_by_quadrature(torch.zeros(8, 2), torch.zeros(8, 2))  # one posterior, the prior: nothing
    assert all(abs(float(v)) < 1e-6 for v in same)
    results = decomposition_checks(small_vae(2), torch.rand(64, 784, generator=g))
    assert len(results) == 5 and all(c.passed for c in results), [(c.name, c.difference) for c in results]


def test_derive_part_5_checks_the_decomposition(tiny_run):
    result = invoke("derive", "5", "--model", tiny_run)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "total correlation" in out and "MI + TC + dimension-wise KL = the mean KL" in out and "checks passed" in out
