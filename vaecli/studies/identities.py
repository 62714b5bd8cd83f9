"""Every identity and inequality of the derivations (studies/derive.py), evaluated on a model.

Each function returns `Check` objects (the two sides, their difference, a stated
tolerance, passed or not), so a notebook can call them as `vaecli derive` does:

    from vaecli import load_run
    from vaecli.studies import identities
    run = load_run("runs/h2-lam1-e20-s0-...")
    x = ...  # one image, (784,) in [0, 1]
    for check in identities.identity_checks(run.model, x) + identities.kl_checks(run.model, x):
        print(check.name, check.difference, check.passed)
"""

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import torch

from vaecli.core import loss
from vaecli.core.model import VAE
from vaecli.studies import quadrature
from vaecli.studies.quadrature import MAX_LATENT_DIM, Grid, Posterior

IDENTITY_TOL = 1e-3  # nats: both grids reach ~1e-4 on trained and untrained H = 2 models
BOUND_TOL = 1e-3  # nats: ELBO(q) may exceed log p(x) by at most the quadrature error
EDGE_TOL = 1e-9  # posterior mass allowed in the grid's outermost cells
CONFIDENCE = 0.999  # of the Monte-Carlo intervals


@dataclass(frozen=True)
class Check:
    """One identity or inequality, evaluated: left `relation` right, within `tolerance`."""

    part: int  # the derivation part it checks
    name: str
    left_label: str
    left: float
    right_label: str
    right: float
    relation: str  # "=": equal within tolerance; "≤": left ≤ right + tolerance; ">": left > right + tolerance
    tolerance: float
    how: str = ""  # how the sides were computed, one line

    @property
    def difference(self) -> float:
        return self.left - self.right

    @property
    def passed(self) -> bool:
        d = self.difference
        if not math.isfinite(d):
            return False
        if self.relation == "=":
            return abs(d) <= self.tolerance
        if self.relation == "≤":
            return d <= self.tolerance
        return d > self.tolerance

    @property
    def needs(self) -> str:
        """What passing takes, in terms of d = left - right: '|d| ≤ 1.0e-03'."""
        if self.relation == "=":
            return f"|d| ≤ {self.tolerance:.1e}"
        return f"d ≤ {self.tolerance:.1e}" if self.relation == "≤" else f"d > {self.tolerance:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "name": self.name,
            "left_label": self.left_label,
            "left": self.left,
            "right_label": self.right_label,
            "right": self.right,
            "relation": self.relation,
            "difference": self.difference,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "how": self.how,
        }


@dataclass(frozen=True)
class Skipped:
    """Checks that could not run, and why."""

    part: int
    name: str
    reason: str


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@torch.no_grad()
def encode(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's q for one image x (D,): mu, logvar, each (H,)."""
    dtype = next(model.parameters()).dtype
    mu, logvar = model.eval().encode(x.reshape(1, -1).to(dtype))
    return mu[0], logvar[0]


def kl_check(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    label: str = "encoder's q",
    samples: int = 200_000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Check:
    """The closed-form KL(q || N(0, I)) of vaecli.loss against a Monte-Carlo estimate, q = N(mu, diag exp(logvar)).

    The estimate is the mean of log q(z) - log p(z) over z ~ q; it passes when the
    closed form lies inside its `confidence` interval.
    """
    mu, logvar = mu.double().reshape(-1), logvar.double().reshape(-1)
    analytic = float(loss.kl_divergence(mu[None], logvar[None])[0])
    generator = torch.Generator().manual_seed(seed)
    z = mu + (0.5 * logvar).exp() * torch.randn(samples, mu.numel(), generator=generator, dtype=torch.float64)
    terms = quadrature.log_normal(z, mu, logvar) - quadrature.log_prior(z)
    estimate, se = float(terms.mean()), float(terms.std() / math.sqrt(samples))
    return Check(
        2,
        f"KL in closed form = Monte Carlo ({label})",
        "closed form",
        analytic,
        "Monte Carlo",
        estimate,
        "=",
        _z(confidence) * se,
        f"{samples:,} samples of z ~ q; tolerance = the {confidence:.1%} confidence interval",
    )


def kl_checks(model: VAE, x: torch.Tensor, seed: int = 0) -> list[Check]:
    """The closed-form KL on the encoder's q for x, and on a q far from the prior."""
    mu, logvar = encode(model, x)
    generator = torch.Generator().manual_seed(seed)
    far_mu = 2 * torch.randn(mu.shape, generator=generator, dtype=torch.float64)
    far_logvar = torch.empty(mu.shape, dtype=torch.float64).uniform_(-3, 2, generator=generator)
    return [
        kl_check(mu, logvar, seed=seed),
        kl_check(far_mu, far_logvar, label="a random q far from the prior", seed=seed + 1),
    ]


def elbo(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, step: float = 0.1) -> float:
    """ELBO(q) = E_q[log p(x|z)] - KL(q || p(z)): a grid in q's coordinates, then vaecli.loss's closed form.

    `step` is the grid's spacing in standard deviations of q (H = 1 uses a tenth of it).
    """
    step = step if mu.numel() > 1 else step / 10
    recon = quadrature.expect_gaussian(lambda z: quadrature.log_likelihood(model, x, z), mu, logvar, step)
    return recon - float(loss.kl_divergence(mu.double()[None], logvar.double()[None])[0])


def kl_to_posterior(posterior: Posterior, mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """KL(q || p(z|x)) as a sum over the grid, with p(z|x) from the grid's own log p(x)."""
    log_q = quadrature.log_normal(posterior.z, mu.double(), logvar.double())
    return float((log_q.exp() * (log_q - posterior.log_density)).sum() * posterior.grid.cell)


def candidate_qs(mu: torch.Tensor, logvar: torch.Tensor, posterior: Posterior) -> dict[str, tuple]:
    """Different Gaussian q's for one image: the encoder's, variations of it, the prior, a fit to p(z|x)."""
    mu, logvar = mu.double(), logvar.double()
    return {
        "the encoder's q": (mu, logvar),
        "encoder's μ, σ × 3": (mu, logvar + 2 * math.log(3)),
        "encoder's μ, σ / 3": (mu, logvar - 2 * math.log(3)),
        "encoder's μ + 1, σ": (mu + 1, logvar),
        "the prior N(0, I)": (torch.zeros_like(mu), torch.zeros_like(logvar)),
        "Gaussian fit to p(z|x)": (posterior.mean, posterior.var.log()),
    }


def identity_checks(
    model: VAE,
    x: torch.Tensor,
    grid: Grid | None = None,
    *,
    importance_samples: int = 10_000,
    seed: int = 0,
) -> list[Check]:
    """Part 1 on one image x (D,), for H <= 2: log p(x) by quadrature against the ELBO and KL(q || p(z|x)).

    Runs in float64 on a copy of `model`. `grid` defaults to `quadrature.choose_grid`'s.
    """
    model = quadrature.as_float64(model)
    x = x.double().reshape(-1)
    mu, logvar = encode(model, x)
    if grid is None:
        grid = quadrature.choose_grid(model, x, mu, logvar)
    posterior = quadrature.quadrature(model, x, grid)
    log_px = posterior.log_px
    where = f"grid of {grid.describe()}"
    own = elbo(model, x, mu, logvar)
    kl_post = kl_to_posterior(posterior, mu, logvar)
    checks = [
        Check(
            1,
            "the grid holds p(z|x): mass in its outer cells",
            "edge mass",
            posterior.edge_mass,
            "none",
            0.0,
            "≤",
            EDGE_TOL,
            where,
        ),
        Check(
            1,
            "log p(x) = ELBO + KL(q ‖ p(z|x))",
            "log p(x)",
            log_px,
            "ELBO + KL",
            own + kl_post,
            "=",
            IDENTITY_TOL,
            "log p(x) and KL(q ‖ p(z|x)) on that grid; ELBO on a grid in q's coordinates, with the closed-form KL",
        ),
    ]
    for label, (q_mu, q_logvar) in candidate_qs(mu, logvar, posterior).items():
        # far from tight, these need less precision than the identity: a coarser grid
        value = own if label == "the encoder's q" else elbo(model, x, q_mu, q_logvar, step=0.2)
        checks.append(Check(1, f"ELBO ≤ log p(x), q = {label}", "ELBO(q)", value, "log p(x)", log_px, "≤", BOUND_TOL))
    checks.append(importance_check(model, x, log_px, mu, logvar, samples=importance_samples, seed=seed))
    return checks


def importance_check(
    model: VAE,
    x: torch.Tensor,
    log_px: float,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    samples: int = 10_000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Check:
    """log p(x) by quadrature against importance sampling from q widened 1.5 times (no grid involved).

    log p(x) ≈ log mean_k p(x, z_k) / r(z_k), z_k ~ r; its standard error by the
    delta method. Passes when the quadrature lies in the `confidence` interval
    widened by the quadrature tolerance.
    """
    mu, logvar = mu.double(), logvar.double() + 2 * math.log(1.5)
    generator = torch.Generator().manual_seed(seed)
    z = mu + (0.5 * logvar).exp() * torch.randn(samples, mu.numel(), generator=generator, dtype=torch.float64)
    log_w = quadrature.log_joint(model, x, z).double() - quadrature.log_normal(z, mu, logvar)
    estimate = float(torch.logsumexp(log_w, 0)) - math.log(samples)
    w = torch.exp(log_w - log_w.max())
    se = float(w.std() / (w.mean() * math.sqrt(samples)))
    return Check(
        1,
        "log p(x): quadrature = importance sampling",
        "quadrature",
        log_px,
        "importance sampling",
        estimate,
        "=",
        _z(confidence) * se + IDENTITY_TOL,
        f"{samples:,} samples from q with σ × 1.5; tolerance = the {confidence:.1%} interval + {IDENTITY_TOL:g}",
    )


def quadrature_skipped(latent_dim: int, part: int = 1) -> Skipped:
    return Skipped(
        part,
        {1: "log p(x) by quadrature: the ELBO identity and bound", 5: "the KL's parts by quadrature"}.get(
            part, "the bounds against log p(x)"
        ),
        f"the model has H = {latent_dim}; quadrature over z needs H ≤ {MAX_LATENT_DIM} "
        f"(a grid of n^H points: {latent_dim} dimensions are too many)",
    )


# --------------------------------------------------------------------------- part 4: the importance-weighted bound

IW_KS = (1, 5, 50, 500)  # the bounds compared
IW_POOL = 100_000  # samples of z ~ q, cut into groups of K for each bound: 100 groups of 500


@torch.no_grad()
def iw_checks(model: VAE, x: torch.Tensor, grid: Grid | None = None, *, seed: int = 0) -> list[Check]:
    """Part 4 on one image x (D,), for H <= 2: ELBO ≤ 𝓛_1 ≤ 𝓛_5 ≤ 𝓛_50 ≤ 𝓛_500 ≤ log p(x), and 𝓛_500's gap.

    One pool of IW_POOL log weights log p(x, z) - log q(z|x), z ~ q, in float64; 𝓛_K is the
    mean over the pool's groups of K of log (1/K) sum w, with its standard error over the
    groups. Each inequality passes within the 99.9 % interval of the difference; the ELBO
    and log p(x) come from grids (part 1), within their quadrature tolerance.
    """
    model = quadrature.as_float64(model)
    x = x.double().reshape(-1)
    mu, logvar = encode(model, x)
    if grid is None:
        grid = quadrature.choose_grid(model, x, mu, logvar)
    log_px = quadrature.quadrature(model, x, grid).log_px
    own_elbo = elbo(model, x, mu, logvar)
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(IW_POOL, mu.numel(), generator=generator, dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * eps
    log_w = quadrature.log_joint(model, x, z).double() - loss.log_posterior(eps, logvar.expand_as(eps))
    z_score = _z(CONFIDENCE)
    bounds = {}
    for k in IW_KS:
        groups = torch.logsumexp(log_w.view(-1, k), dim=1) - math.log(k)  # (IW_POOL / k,)
        bounds[k] = (float(groups.mean()), float(groups.std() / math.sqrt(len(groups))))
    how = f"{IW_POOL:,} samples of z ~ q cut into groups of K; tolerance = the {CONFIDENCE:.1%} interval"
    checks = [
        Check(4, "ELBO = 𝓛_1 (one sample: the bound is the ELBO)", "ELBO", own_elbo, "𝓛_1", bounds[1][0], "=",
              z_score * bounds[1][1] + IDENTITY_TOL, how),
    ]  # fmt: skip
    for a, b in zip(IW_KS, IW_KS[1:], strict=False):
        (la, sa), (lb, sb) = bounds[a], bounds[b]
        checks.append(Check(4, f"𝓛_{a} ≤ 𝓛_{b}", f"𝓛_{a}", la, f"𝓛_{b}", lb, "≤", z_score * math.hypot(sa, sb), how))
    last, (l_last, s_last) = IW_KS[-1], bounds[IW_KS[-1]]
    checks.append(
        Check(4, f"𝓛_{last} ≤ log p(x)", f"𝓛_{last}", l_last, "log p(x)", log_px, "≤",
              z_score * s_last + BOUND_TOL, how + f" + {BOUND_TOL:g} for the quadrature")
    )  # fmt: skip
    # the gap's second-order prediction, Var[w] / (2 K p(x)^2), from the pool's weights themselves
    w = torch.exp(log_w - log_w.max())
    predicted = float(w.var() / w.mean().pow(2)) / (2 * last)
    checks.append(
        Check(
            4,
            f"log p(x) − 𝓛_{last} ≤ twice its second-order prediction Var(w) / (2K p(x)²)",
            "gap",
            log_px - l_last,
            "2 × prediction",
            2 * predicted,
            "≤",
            z_score * s_last + BOUND_TOL,
            "the expansion drops terms in 1/K²: at K = 500 they are far below its leading term, "
            "so twice the prediction (plus the Monte-Carlo and quadrature error) bounds the gap",
        )
    )
    return checks


# --------------------------------------------------------------------------- part 3: the λ sweep


@dataclass(frozen=True)
class SweepRow:
    lam: float
    kl: float  # test KL after the last epoch, nats per image
    recon: float  # test reconstruction after the last epoch
    run: str  # the run folder, or "in memory"
    reused: bool
    model: VAE | None = field(default=None, repr=False, compare=False)


def lagrangian_checks(rows: list[SweepRow]) -> list[Check]:
    """KL after training falls as λ grows: one check per neighbouring pair of λ."""
    rows = sorted(rows, key=lambda r: r.lam)
    return [
        Check(
            3,
            f"KL falls as λ grows: λ = {a.lam:g} → {b.lam:g}",
            f"KL at λ = {a.lam:g}",
            a.kl,
            f"KL at λ = {b.lam:g}",
            b.kl,
            ">",
            0.0,
            "test KL after the last epoch, nats per image",
        )
        for a, b in zip(rows, rows[1:], strict=False)
    ]


@dataclass
class Findings:
    """What the checks found, per derivation part, ready to render or export."""

    checks: list[Check] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    sweep: list[SweepRow] = field(default_factory=list)
    context: dict[int, list[str]] = field(default_factory=dict)  # part -> lines: model, image, data, ...

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]
