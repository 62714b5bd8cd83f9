"""Problem 1 of the homework: the loss derived step by step, as data.

`PARTS` holds, per part, steps of formula + reason, each formula in LaTeX for
reports and in Unicode for the terminal. The numbers that check each step on a
model are in studies/identities.py; studies/checks.py runs them for `vaecli derive`.

    from vaecli.studies import derive
    for step in derive.part(1).steps:
        print(step.text, "--", step.why)
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    latex: str  # the formula, LaTeX math without delimiters
    text: str  # the same formula in Unicode, for a terminal
    why: str  # the reason, in words (Unicode)


@dataclass(frozen=True)
class Part:
    number: int
    title: str
    intro: str
    steps: tuple[Step, ...]
    outro: str


KL = r"\mathrm{KL}"
Q = r"q_\phi(z \mid x)"
POST = r"p_\theta(z \mid x)"
LIK = r"p_\theta(x \mid z)"
EQ = r"\mathbb{E}_{q_\phi(z \mid x)}"
ELBO = r"\mathcal{L}(\theta, \phi; x)"
NJ = r"\mathcal{N}(\mu_j, \sigma_j^2)"
N01 = r"\mathcal{N}(0, 1)"


def _kl(a: str, b: str) -> str:
    return rf"{KL}\left({a} \mathrel{{\Vert}} {b}\right)"


KLJ = _kl(NJ, N01)
KL_N = _kl(r"q_\phi(z \mid x_n)", "p(z)")  # part 5: one image's KL
KL_TC = _kl("q(z)", r"\prod_j q(z_j)")  # the total correlation
KL_J = _kl("q(z_j)", "p(z_j)")  # one marginal's KL


PARTS: tuple[Part, ...] = (
    Part(
        1,
        "The ELBO identity: minimising `KL(q ‖ p(z|x))` is maximising the ELBO",
        "The model is `p_θ(x, z) = p_θ(x|z) p(z)` with the prior `p(z) = N(0, I)`; the encoder gives "
        "`q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x))`. The evidence `log p_θ(x) = log ∫ p_θ(x|z) p(z) dz` has no "
        "closed form, and neither has the true posterior `p_θ(z|x)`, so `q_φ(z|x)` approximates it.",
        (
            Step(
                rf"{_kl(Q, POST)} = {EQ}\left[\log {Q} - \log {POST}\right]",
                "KL(q_φ(z|x) ‖ p_θ(z|x)) = 𝔼_q[ log q_φ(z|x) − log p_θ(z|x) ]",
                "definition of the KL divergence",
            ),
            Step(
                rf"= {EQ}\left[\log {Q} - \log {LIK} - \log p(z) + \log p_\theta(x)\right]",
                "= 𝔼_q[ log q_φ(z|x) − log p_θ(x|z) − log p(z) + log p_θ(x) ]",
                "Bayes' rule: `p_θ(z|x) = p_θ(x|z) p(z) / p_θ(x)`",
            ),
            Step(
                rf"= \log p_\theta(x) - {EQ}\left[\log {LIK} + \log p(z) - \log {Q}\right]",
                "= log p_θ(x) − 𝔼_q[ log p_θ(x|z) + log p(z) − log q_φ(z|x) ]",
                "`log p_θ(x)` does not depend on `z`, so it leaves the expectation",
            ),
            Step(
                rf"= \log p_\theta(x) - {ELBO}",
                "= log p_θ(x) − 𝓛(θ, φ; x)",
                "name the bracket `𝓛(θ, φ; x)`: the evidence lower bound (ELBO)",
            ),
            Step(
                rf"\log p_\theta(x) = {ELBO} + {_kl(Q, POST)}",
                "log p_θ(x) = 𝓛(θ, φ; x) + KL(q_φ(z|x) ‖ p_θ(z|x))",
                "rearranged: the ELBO identity",
            ),
            Step(
                rf"{ELBO} \le \log p_\theta(x)",
                "𝓛(θ, φ; x) ≤ log p_θ(x)",
                "`KL ≥ 0` (Gibbs' inequality), with equality only when `q_φ(z|x) = p_θ(z|x)`: "
                "hence the name lower bound",
            ),
            Step(
                rf"\operatorname*{{argmin}}_{{\phi}} {_kl(Q, POST)} = \operatorname*{{argmax}}_{{\phi}} {ELBO}",
                "argmin_φ KL(q_φ(z|x) ‖ p_θ(z|x)) = argmax_φ 𝓛(θ, φ; x)",
                "`KL = log p_θ(x) − 𝓛`, and `log p_θ(x)` does not depend on `φ`: "
                "every step in `φ` that lowers the KL raises `𝓛` by as much",
            ),
        ),
        "Over `θ`, `log p_θ(x)` moves too: maximising `𝓛` over `θ` and `φ` together raises the evidence "
        "`log p_θ(x)` (maximum likelihood) and closes the gap `KL(q_φ(z|x) ‖ p_θ(z|x))` at once. That is the "
        "sense of the homework's argmin over `(φ, θ)`; the KL alone could also be zeroed by a decoder that "
        "ignores `z`.",
    ),
    Part(
        2,
        "The ELBO as reconstruction minus KL to the prior, and the KL in closed form",
        "Splitting the ELBO gives the two terms of the loss; for Gaussian q and prior the KL term has a "
        "closed form, which is what vaecli/core/loss.py computes.",
        (
            Step(
                rf"{ELBO} = {EQ}\left[\log {LIK}\right] + {EQ}\left[\log p(z) - \log {Q}\right]",
                "𝓛(θ, φ; x) = 𝔼_q[ log p_θ(x|z) ] + 𝔼_q[ log p(z) − log q_φ(z|x) ]",
                "split the bracket of part 1 (linearity of `𝔼`)",
            ),
            Step(
                rf"= {EQ}\left[\log {LIK}\right] - {_kl(Q, 'p(z)')}",
                "= 𝔼_q[ log p_θ(x|z) ] − KL(q_φ(z|x) ‖ p(z))",
                "the second term is minus a KL by definition: reconstruction minus KL to the prior",
            ),
            Step(
                rf"{EQ}\left[\log {LIK}\right] = \mathbb{{E}}_{{\epsilon \sim \mathcal{{N}}(0, I)}}"
                r"\left[\log p_\theta(x \mid \mu + \sigma \odot \epsilon)\right]",
                "𝔼_q[ log p_θ(x|z) ] = 𝔼_{ε∼N(0,I)}[ log p_θ(x | μ + σ ⊙ ε) ]",
                "reparameterisation `z = μ + σ ⊙ ε`: gradients reach `μ` and `σ`; the loss uses one `ε` per image",
            ),
            Step(
                r"\log p_\theta(x \mid z) = \sum_{d} \left[x_d \log y_d + (1 - x_d) \log(1 - y_d)\right],"
                r"\quad y = \operatorname{sigmoid}(\text{decoder}(z))",
                "log p_θ(x|z) = Σ_d [ x_d log y_d + (1 − x_d) log(1 − y_d) ],  y = sigmoid(decoder(z))",
                "Bernoulli decoder: minus the binary cross-entropy "
                "(with --recon gaussian: minus the squared error, up to a constant)",
            ),
            Step(
                rf"{_kl(Q, 'p(z)')} = \sum_{{j=1}}^{{H}} {KLJ}",
                "KL(q_φ(z|x) ‖ p(z)) = Σ_j KL(N(μ_j, σ_j²) ‖ N(0, 1))",
                "both are diagonal Gaussians: they factorise over the `H` latents, "
                "and the log turns products into sums",
            ),
            Step(
                r"\log \mathcal{N}(z_j; \mu_j, \sigma_j^2) = -\tfrac{1}{2} \log 2\pi - \tfrac{1}{2} \log \sigma_j^2"
                r" - \frac{(z_j - \mu_j)^2}{2 \sigma_j^2}, \quad "
                r"\log \mathcal{N}(z_j; 0, 1) = -\tfrac{1}{2} \log 2\pi - \frac{z_j^2}{2}",
                "log N(z_j; μ_j, σ_j²) = −½ log 2π − ½ log σ_j² − (z_j − μ_j)²/(2σ_j²),  "
                "log N(z_j; 0, 1) = −½ log 2π − z_j²/2",
                "the Gaussian log-density",
            ),
            Step(
                r"\mathbb{E}_q\left[(z_j - \mu_j)^2\right] = \sigma_j^2, \quad "
                r"\mathbb{E}_q\left[z_j^2\right] = \mu_j^2 + \sigma_j^2",
                "𝔼_q[ (z_j − μ_j)² ] = σ_j²,  𝔼_q[ z_j² ] = μ_j² + σ_j²",
                "the variance and the second moment of `N(μ_j, σ_j²)`",
            ),
            Step(
                rf"{KLJ} = "
                r"-\tfrac{1}{2} \log \sigma_j^2 - \tfrac{1}{2} + \tfrac{1}{2}\left(\mu_j^2 + \sigma_j^2\right)",
                "KL(N(μ_j, σ_j²) ‖ N(0, 1)) = −½ log σ_j² − ½ + ½ (μ_j² + σ_j²)",
                "`𝔼_q` of `log q − log p`, term by term; the `½ log 2π` cancels",
            ),
            Step(
                rf"{_kl(Q, 'p(z)')} = -\frac{{1}}{{2}} \sum_{{j=1}}^{{H}}"
                r"\left(1 + \log \sigma_j^2 - \mu_j^2 - \sigma_j^2\right)",
                "KL(q_φ(z|x) ‖ p(z)) = −½ Σ_j ( 1 + log σ_j² − μ_j² − σ_j² )",
                "sum over `j`: the closed form in vaecli/core/loss.py (Kingma & Welling 2014, appendix B)",
            ),
            Step(
                rf"\text{{loss}}(x) = -\log p_\theta(x \mid z) + \lambda {_kl(Q, 'p(z)')},"
                r"\quad z = \mu + \sigma \odot \epsilon",
                "loss(x) = −log p_θ(x|z) + λ · KL(q_φ(z|x) ‖ p(z)),  z = μ + σ ⊙ ε",
                "at `λ = 1` a one-sample estimate of `−𝓛`; the homework's `𝓛*` weighs the KL by `λ`",
            ),
        ),
        "With `λ = 1` the loss is minus the ELBO: training pushes up a lower bound on `log p_θ(x)`.",
    ),
    Part(
        3,
        "The constrained problem and its Lagrangian: where `λ` comes from",
        "By part 1, minimising `KL(q_φ(z|x) ‖ p_θ(z|x))` is maximising `𝓛`, the reconstruction minus "
        "`KL(q_φ(z|x) ‖ p(z))`. The homework's constrained form holds the KL to the prior under a budget "
        "`ε > 0` instead, and maximises what is left, the reconstruction (Higgins et al. 2017, `β`-VAE).",
        (
            Step(
                rf"\max_{{\theta, \phi}} {EQ}\left[\log {LIK}\right] \quad \text{{subject to}} \quad "
                rf"{_kl(Q, 'p(z)')} < \epsilon",
                "max_{θ,φ} 𝔼_q[ log p_θ(x|z) ]  subject to  KL(q_φ(z|x) ‖ p(z)) < ε",
                "the best reconstruction from a code that tells at most `ε` nats about `x` beyond the prior",
            ),
            Step(
                rf"F(\theta, \phi, \lambda; x) = {EQ}\left[\log {LIK}\right] - "
                rf"\lambda \left({_kl(Q, 'p(z)')} - \epsilon\right), \quad \lambda \ge 0",
                "F(θ, φ, λ; x) = 𝔼_q[ log p_θ(x|z) ] − λ ( KL(q_φ(z|x) ‖ p(z)) − ε ),  λ ≥ 0",
                "the Lagrangian: the constraint, as `KL − ε ≤ 0`, enters with a multiplier `λ ≥ 0`",
            ),
            Step(
                rf"\nabla_{{\theta,\phi}} {EQ}\left[\log {LIK}\right] = \lambda \nabla_{{\theta,\phi}} {KL}, "
                rf"\quad {KL} \le \epsilon, \quad \lambda \ge 0, \quad \lambda \left({KL} - \epsilon\right) = 0",
                "∇_{θ,φ} 𝔼_q[ log p_θ(x|z) ] = λ ∇_{θ,φ} KL,  KL ≤ ε,  λ ≥ 0,  λ (KL − ε) = 0",
                "the KKT conditions: stationarity, primal and dual feasibility, complementary slackness",
            ),
            Step(
                rf"F(\theta, \phi, \lambda; x) = {EQ}\left[\log {LIK}\right] - \lambda {_kl(Q, 'p(z)')}"
                r" + \lambda \epsilon",
                "F(θ, φ, λ; x) = 𝔼_q[ log p_θ(x|z) ] − λ KL(q_φ(z|x) ‖ p(z)) + λ ε",
                "multiply out",
            ),
            Step(
                rf"\operatorname*{{argmax}}_{{\theta, \phi}} F = \operatorname*{{argmax}}_{{\theta, \phi}} "
                rf"{EQ}\left[\log {LIK}\right] - \lambda {_kl(Q, 'p(z)')} = "
                r"\operatorname*{argmax}_{\theta, \phi} \mathcal{L}^*(\theta, \phi; x)",
                "argmax_{θ,φ} F = argmax_{θ,φ} 𝔼_q[ log p_θ(x|z) ] − λ KL(q_φ(z|x) ‖ p(z)) = argmax 𝓛*(θ, φ; x)",
                "`λ ε` does not depend on `θ` or `φ`, so dropping it moves no maximiser: "
                "the homework's `𝓛*` (the `β`-VAE objective); `λ = 1` gives the ELBO",
            ),
            Step(
                rf"\lambda > 0 \quad \Rightarrow \quad {_kl(Q, 'p(z)')} = \epsilon",
                "λ > 0  ⇒  KL(q_φ(z|x) ‖ p(z)) = ε",
                "complementary slackness: a positive multiplier means the constraint binds",
            ),
            Step(
                r"\lambda = \frac{d r^*(\epsilon)}{d \epsilon}, \quad "
                rf"r^*(\epsilon) = \max \left\lbrace {EQ}\left[\log {LIK}\right] : {KL} \le \epsilon \right\rbrace",
                "λ = dr*(ε)/dε,  r*(ε) = the best reconstruction with KL ≤ ε",
                "`λ` is the price of one more nat of KL (envelope theorem); `r*` flattens as `ε` grows, "
                "so a larger `λ` goes with a smaller `ε`: a tighter constraint, less KL, worse reconstruction",
            ),
        ),
        "Keeping `−KL` in the objective as well (`max 𝓛` subject to `KL < ε`) gives the same form with "
        "`λ + 1` in place of `λ`. Checked below: runs trained with a larger `λ` end training with less KL.",
    ),
    Part(
        4,
        "The importance-weighted bound: `log p(x) ≥ 𝓛_K ≥ 𝓛_1 = ELBO`, tighter as `K` grows",
        "`--objective iwae --k K` trains on the bound of Burda, Grosse & Salakhutdinov (2016) and "
        "`vaecli eval --iw-samples K` scores with it. It draws `K` codes `z_1 … z_K ~ q_φ(z|x)` and averages "
        "their importance weights `w_k = p_θ(x, z_k) / q_φ(z_k|x)` inside the log.",
        (
            Step(
                rf"p_\theta(x) = \int {Q} \frac{{p_\theta(x, z)}}{{{Q}}} \mathrm{{d}}z = "
                rf"{EQ}\left[\frac{{p_\theta(x, z)}}{{{Q}}}\right]",
                "p_θ(x) = ∫ q_φ(z|x) p_θ(x, z) / q_φ(z|x) dz = 𝔼_q[ w ],  w = p_θ(x, z) / q_φ(z|x)",
                "importance sampling: `q` is positive wherever `p_θ(x, z)` is (a Gaussian is positive everywhere)",
            ),
            Step(
                r"p_\theta(x) = \mathbb{E}_{z_1, \ldots, z_K}\left[\frac{1}{K} \sum_{k=1}^K w_k\right]",
                "p_θ(x) = 𝔼_{z_1…z_K}[ (1/K) Σ_k w_k ]",
                "the mean of `K` independent weights has the same expectation as one",
            ),
            Step(
                r"\log p_\theta(x) \ge \mathbb{E}_{z_1, \ldots, z_K}\left[\log \frac{1}{K} \sum_{k=1}^K w_k\right]"
                r" = \mathcal{L}_K",
                "log p_θ(x) ≥ 𝔼[ log (1/K) Σ_k w_k ] = 𝓛_K",
                "Jensen's inequality: `log` is concave, so the log of an expectation is at least "
                "the expectation of the log",
            ),
            Step(
                rf"\mathcal{{L}}_1 = {EQ}\left[\log p_\theta(x, z) - \log {Q}\right] = {ELBO}",
                "𝓛_1 = 𝔼_q[ log p_θ(x, z) − log q_φ(z|x) ] = ELBO",
                "with one sample the bound is the ELBO: the objective of parts 1 and 2",
            ),
            Step(
                r"\frac{1}{K+1} \sum_{k=1}^{K+1} w_k = \mathbb{E}_{I}\left[\frac{1}{K} \sum_{k \in I} w_k\right]"
                r" \quad \Rightarrow \quad \mathcal{L}_{K+1} \ge \mathcal{L}_K",
                "(1/(K+1)) Σ_{k≤K+1} w_k = 𝔼_I[ (1/K) Σ_{k∈I} w_k ]  ⇒  𝓛_{K+1} ≥ 𝓛_K",
                "average over the `K+1` subsets `I` of size `K`; Jensen again moves the log inside that average "
                "(Burda et al. 2016, Theorem 1)",
            ),
            Step(
                r"\frac{1}{K} \sum_{k=1}^K w_k \to p_\theta(x) \quad \Rightarrow \quad "
                r"\mathcal{L}_K \to \log p_\theta(x), \quad "
                r"\log p_\theta(x) - \mathcal{L}_K \approx \frac{\mathrm{Var}[w]}{2 K p_\theta(x)^2}",
                "(1/K) Σ_k w_k → p_θ(x)  ⇒  𝓛_K → log p_θ(x);  gap ≈ Var[w] / (2K p_θ(x)²)",
                "the law of large numbers, for bounded weights; a second-order expansion of `log` around "
                "`p_θ(x)` gives the gap, which shrinks like `1/K` (Maddison et al. 2017; Rainforth et al. 2018)",
            ),
        ),
        "So a larger `K` trains on a tighter bound: the encoder is no longer pushed to cover only where one "
        "sample explains `x`. Checked below on an H ≤ 2 model, against `log p(x)` by quadrature: "
        "`ELBO ≤ 𝓛_1 ≤ 𝓛_5 ≤ 𝓛_50 ≤ 𝓛_500 ≤ log p(x)`, each within its Monte-Carlo error.",
    ),
    Part(
        5,
        "The KL's three parts: MI, total correlation, dimension-wise KL",
        "Averaged over the data, the KL term of the ELBO splits into three parts (Chen et al. 2018, eq. 2), and "
        "each asks something else of the code. Take the data set as `N` images `x_n`, each drawn with "
        "probability `1/N`, so `q(z, n) = q_φ(z|x_n) / N` and the aggregate posterior is "
        "`q(z) = (1/N) Σ_n q_φ(z|x_n)`, with marginals `q(z_j)`.",
        (
            Step(
                r"\frac{1}{N} \sum_n " + KL_N + " = "
                r"\mathbb{E}_{q(z, n)}\left[\log q_\phi(z \mid x_n) - \log p(z)\right]",
                "(1/N) Σ_n KL(q_φ(z|x_n) ‖ p(z)) = 𝔼_{q(z,n)}[ log q_φ(z|x_n) − log p(z) ]",
                "the definition of the KL, averaged over the images",
            ),
            Step(
                r"= \mathbb{E}_{q(z, n)}\left[\log \frac{q_\phi(z \mid x_n)}{q(z)}\right] + "
                r"\mathbb{E}_{q(z)}\left[\log \frac{q(z)}{p(z)}\right]",
                "= 𝔼_{q(z,n)}[ log q_φ(z|x_n) / q(z) ] + 𝔼_{q(z)}[ log q(z) / p(z) ]",
                "add and subtract `log q(z)`; the second term depends on `z` alone, so its expectation is over `q(z)`",
            ),
            Step(
                r"\mathbb{E}_{q(z, n)}\left[\log \frac{q_\phi(z \mid x_n)}{q(z)}\right] = I_q(n; z)"
                r" \le \log N",
                "𝔼_{q(z,n)}[ log q_φ(z|x_n) / q(z) ] = I_q(n; z) ≤ log N",
                "the first term is the mutual information between the image's index and its code: how much the "
                "code says about which image it came from; at most the entropy of `n`, `log N`",
            ),
            Step(
                r"\mathbb{E}_{q(z)}\left[\log \frac{q(z)}{p(z)}\right] = "
                r"\mathbb{E}_{q(z)}\left[\log \frac{q(z)}{\prod_j q(z_j)}\right] + "
                r"\sum_j \mathbb{E}_{q(z_j)}\left[\log \frac{q(z_j)}{p(z_j)}\right]",
                "𝔼_{q(z)}[ log q(z) / p(z) ] = 𝔼_{q(z)}[ log q(z) / Π_j q(z_j) ] "
                "+ Σ_j 𝔼_{q(z_j)}[ log q(z_j) / p(z_j) ]",
                "add and subtract `Σ_j log q(z_j)`, and use `p(z) = Π_j p(z_j)`: the prior is a product of "
                "standard normals",
            ),
            Step(
                "= " + KL_TC + r" + \sum_j " + KL_J,
                "= KL(q(z) ‖ Π_j q(z_j)) + Σ_j KL(q(z_j) ‖ p(z_j))",
                "the total correlation (how far the latents are from independent under the aggregate posterior) "
                "and the dimension-wise KL (how far each marginal is from the prior)",
            ),
            Step(
                r"\mathcal{L}_{\beta\text{-TC}} = \mathbb{E}_q[\log p_\theta(x \mid z)] - \alpha I_q(n; z) "
                r"- \beta \mathrm{TC} - \gamma \sum_j " + KL_J,
                "𝓛_β-TC = 𝔼_q[ log p_θ(x|z) ] − α I_q(n; z) − β TC − γ Σ_j KL(q(z_j) ‖ p(z_j))",
                "the objective of β-TCVAE, which weights the parts apart (Chen et al. 2018, eq. 4); "
                "--objective betatc takes `α = γ = λ` and `β` = --tc-weight. A larger `λ` on the whole KL "
                "(β-VAE) presses on all three, the mutual information too, which is why it costs reconstruction",
            ),
        ),
        "Checked below on the first 64 test images as the whole data set and the H = 2 model of parts 1 and 2: "
        "with H = 2 the aggregate posterior is a mixture of 64 Gaussians, so each part is an integral on a grid. "
        "The parts add up to the mean KL; the mutual information is at most `log 64`; and the minibatch-stratified "
        "estimator that β-TCVAE trains with (--objective betatc) finds each part.",
    ),
)


PART_NUMBERS = tuple(p.number for p in PARTS)


def part(number: int) -> Part:
    return PARTS[number - 1]
