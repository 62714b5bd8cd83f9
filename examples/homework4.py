# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Homework 4: a variational autoencoder on MNIST, with vaecli
#
# Every task and problem of the homework, done with the `vaecli` library: Task 1 the network, Task 2 the loss with a
# weight $\lambda$ on its KL term, Task 3 the ablations, then the report: Problem 1 the derivation (checked
# numerically), Problem 2 the latent size $H$, Problem 3 the KL weight $\lambda$.
#
# **Install** (Python 3.10 or newer): `pip install 'vaecli[notebook]'` (from a clone: `pip install -e '.[notebook]'`)
# brings Jupyter and jupytext along; then `jupyter lab examples/homework4.ipynb`. The same notebook runs as a plain
# script, printing text and writing its figures to files: `python examples/homework4.py`. For the PDF the homework
# asks for beside the notebook: `jupyter nbconvert --to pdf examples/homework4.ipynb` (needs LaTeX), or print the page
# from the browser.
#
# **Settings** come from environment variables, read in the first code cell; the defaults are the full homework:
# `VAECLI_DATA_DIR` (a folder holding `MNIST/raw`; unset: MNIST is downloaded into a cache), `HW4_EPOCHS` (20),
# `HW4_LAYERS` (`512 256`, the encoder's hidden layers; the decoder mirrors them), `HW4_OUT` (`homework4`, where
# figures, tables and reports go), `HW4_IW_SAMPLES` (100), `HW4_DEVICE` (`auto`). Trained models are kept in vaecli's
# run store (`VAECLI_RUNS`, else `./runs`), so a second run of the notebook reuses them instead of training again.
#
# **The outputs saved with this notebook** come from one run, top to bottom in a fresh kernel, at the full settings
# above (20 epochs, layers 512-256, real MNIST, 100 importance samples): 5 minutes on an idle 2-core CPU (an AMD
# EPYC with AVX512-BF16, so bf16), from an empty run store. The numbers quoted in the answers are that run's; the
# tables printed above each answer are recomputed whenever the notebook runs.
#
# `examples/homework4.py` is this notebook in jupytext's percent format, paired with it: after editing either,
# `jupytext --sync examples/homework4.ipynb` brings the other up to date.

# %%
import inspect
import io
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import vaecli
from vaecli import checks, derive, export, figures, identities, sweep
from vaecli.views.ablation import save_ablation, to_markdown

DATA_DIR = Path(os.environ["VAECLI_DATA_DIR"]) if os.environ.get("VAECLI_DATA_DIR") else None
EPOCHS = int(os.environ.get("HW4_EPOCHS", "20"))
LAYERS = tuple(int(width) for width in os.environ.get("HW4_LAYERS", "512 256").split())
OUT = Path(os.environ.get("HW4_OUT", "homework4"))
IW_SAMPLES = int(os.environ.get("HW4_IW_SAMPLES", "100"))  # samples of the importance-weighted bound
DEVICE = os.environ.get("HW4_DEVICE", "auto")

# inside Jupyter, Markdown and figures render inline; under `python homework4.py`, Markdown prints as text
_ipython = sys.modules.get("IPython")
IN_JUPYTER = _ipython is not None and getattr(_ipython.get_ipython(), "kernel", None) is not None
if IN_JUPYTER:
    from IPython.display import Image, Markdown, display


def show_md(text: str) -> None:
    if IN_JUPYTER:
        display(Markdown(text))
    else:
        print(text)


def show(fig: plt.Figure) -> None:
    # as PNG bytes: vaecli draws with matplotlib's Agg backend, not Jupyter's inline one; in a terminal, the
    # figures are in the files save_ablation writes (at 120 dpi)
    if IN_JUPYTER:
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80, bbox_inches="tight")
        display(Image(data=png.getvalue()))
    plt.close(fig)


data = vaecli.load_dataset("mnist", DATA_DIR)
print(f"vaecli {vaecli.__version__}, torch {torch.__version__}")
print(f"data: {data.source}, {len(data.train.images)} train and {len(data.test.images)} test images")
print(f"settings: {EPOCHS} epochs, layers {'-'.join(map(str, LAYERS))}, device {DEVICE}, out {OUT}")

# %% [markdown]
# ## Task 1: the VAE network
#
# A fully connected encoder maps an image $x$ (784 pixels in [0, 1]) through the hidden layers to two heads, the mean
# $\mu$ and the log-variance `logvar` ($\log \sigma^2$) of
# $q(z \mid x) = \mathcal{N}(\mu, \operatorname{diag} \sigma^2)$ over $H$ latents. The stochastic layer uses the
# reparameterization trick: $z = \mu + \sigma \odot \epsilon$ with $\epsilon \sim \mathcal{N}(0, I)$ drawn from the
# standard normal, so gradients flow through $\mu$ and $\sigma$. The decoder mirrors the encoder and returns 784
# logits; their sigmoid is the mean of a Bernoulli per pixel.

# %%
torch.manual_seed(0)  # the untrained weights, so that this cell and the next print the same numbers every run
model = vaecli.VAE(vaecli.ModelConfig(latent_dim=2, hidden_layers=LAYERS))
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters at H = 2")

x = data.test.images[:128]  # (128, 784)
with torch.no_grad():
    mu, logvar = model.encode(x)  # (128, H) each
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))  # eps ~ N(0, I)
    z = model.reparameterize(mu, logvar, eps=eps)  # z = mu + exp(logvar / 2) * eps
    logits = model.decode(z)  # (128, 784)
print(f"x {tuple(x.shape)} -> mu, logvar {tuple(mu.shape)} -> z {tuple(z.shape)} -> logits {tuple(logits.shape)}")
print(inspect.getsource(vaecli.VAE.reparameterize))

# %% [markdown]
# ## Task 2: the loss with a weight on the KL term
#
# The homework's objective is
# $\mathcal{L}^*(x) = \mathbb{E}_q[\log p(x \mid z)] - \lambda \mathrm{KL}(q(z \mid x) \mathrel{\Vert} p(z))$; vaecli
# minimizes its negative, `recon + lam * KL` in nats per image: `recon` is the binary cross-entropy of the decoded
# logits ($-\log p(x \mid z)$ for one $z$ per image), $\mathrm{KL}$ the closed form for two Gaussians (Kingma &
# Welling 2014, appendix B). Both are averaged over the batch, so $\lambda$ means the same at any batch size, and they
# are returned apart, so `recon + KL` (the negative ELBO) compares runs trained with different $\lambda$.

# %%
print(inspect.getsource(vaecli.loss.kl_divergence))
print(inspect.getsource(vaecli.loss.vae_loss))
print(inspect.getsource(vaecli.loss.LossTerms))

with torch.no_grad():
    out = model(x, torch.Generator().manual_seed(0))
for lam in (1.0, 5.0, 10.0, 40.0):
    terms = vaecli.vae_loss(out, x, lam, model.config.recon)
    print(
        f"untrained model, lam={lam:g}: recon {terms.recon:.1f} + lam * KL {lam * terms.kl:.3f}"
        f" = {terms.total:.1f} nats per image (KL {terms.kl:.4f})"
    )

# %% [markdown]
# ## Task 3: the ablations
#
# Two sweeps of the same base model, each member trained for the same number of epochs with Adam on the loss of Task
# 2: Problem 2 varies the latent size $H$ = 2, 10, 25, 50 at $\lambda = 1$, Problem 3 the KL weight $\lambda$ = 1, 5,
# 10, 40 at $H = 2$. The member $H = 2, \lambda = 1$ is in both, so it is trained once; 7 models in all. Each member
# is scored on the 10,000 test images: the reconstruction term, the KL, the negative ELBO (their sum), a tighter
# importance-weighted bound on $-\log p(x)$, and the active units (latents whose posterior mean varies across images).


# %%
class Progress(vaecli.SweepObserver):
    """One line when members start training, or are found trained in the run store."""

    def __init__(self, plan: vaecli.Sweep) -> None:
        self.configs = plan.members()

    def name(self, index: int) -> str:
        config = self.configs[index]
        return f"H={config.model.latent_dim}, lam={config.lam:g}"

    def on_fits(self, indices, how, jobs):
        print(f"  training {', '.join(self.name(i) for i in indices)} ({how}, {jobs} at a time)")

    def on_reused(self, index, path):
        print(f"  reused {self.name(index)} from {path}")


base = vaecli.TrainConfig(model=model.config, epochs=EPOCHS)
problem2 = vaecli.Sweep(base, hidden=(2, 10, 25, 50))  # lam = 1
problem3 = vaecli.Sweep(base, lams=(1.0, 5.0, 10.0, 40.0))  # H = 2
options = vaecli.SweepOptions(device=DEVICE, iw_samples=IW_SAMPLES)
ablations = {}
for name, plan in (("problem2", problem2), ("problem3", problem3)):
    print(f"{name}, the same as `{plan.command()}`:")
    members = vaecli.run_sweep(plan, data, options, observer=Progress(plan))
    ablations[name] = members, save_ablation(members, plan, data.test.images, OUT / name)
    print(f"  figures, metrics.csv and report.md in {OUT / name}")

# %% [markdown]
# ## Problem 1: the derivation
#
# vaecli keeps the derivation as data (`derive.part(n)`: steps of formula and reason) and checks every identity in it
# numerically on the models just trained (`checks.check_parts`). Part 1 answers the first question, part 3 the second;
# part 2 connects the ELBO to the loss of Task 2.


# %%
def derivation(number: int) -> str:
    """Part `number` of vaecli's derivation as Markdown with LaTeX, each step with its reason."""
    part = derive.part(number)
    lines = [f"### Part {number}. {export.prose_markdown(part.title)}", "", export.prose_markdown(part.intro), ""]
    for i, step in enumerate(part.steps, 1):
        why = export.prose_markdown(step.why)
        lines += [f"**Step {i}.** {why[:1].upper()}{why[1:]}:", "", f"$$ {step.latex} $$", ""]
    return "\n".join([*lines, export.prose_markdown(part.outro)])


def checks_table(findings: identities.Findings, number: int) -> str:
    """Part `number`'s checks as a Markdown table: the two sides, their difference and the verdict."""
    lines = [f"- {line}" for line in findings.context.get(number, [])]
    lines += ["", "| check | left | right | d = left − right | needs | result |", "|---|---|---|---|---|---|"]
    for c in findings.checks:
        if c.part == number:
            cells = [c.name, f"{c.left_label} = {c.left:.6g}", f"{c.right_label} = {c.right:.6g}"]
            cells += [f"{c.difference:+.2e}", c.needs, "pass" if c.passed else "**FAIL**"]
            lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    lines += [f"\n*Skipped: {s.name}: {s.reason}.*" for s in findings.skipped if s.part == number]
    return "\n".join(lines)


# the runs of Problem 3 (H = 2, lam = 1, 5, 10, 40) are the checks' runs: found in the store, not trained again
settings = checks.DeriveSettings(epochs=EPOCHS, layers=LAYERS, lams=problem3.lams, data_dir=DATA_DIR, device=DEVICE)
findings = checks.check_parts(settings, parts=(1, 2, 3))  # the homework's; vaecli's part 4 goes beyond it
print(f"{len(findings.checks) - len(findings.failed)} of {len(findings.checks)} checks passed")

# %% [markdown]
# ### (a) $\operatorname{argmin} \mathrm{KL}(q \mathrel{\Vert} p(z \mid x)) = \operatorname{argmax} \mathcal{L}$

# %%
show_md(derivation(1))
show_md("**Checked numerically** on the trained `H = 2, lam = 1` model, `log p(x)` by quadrature over z:")
show_md(checks_table(findings, 1))

# %% [markdown]
# The evidence splits into the ELBO and the KL to the true posterior,
# $\log p(x) = \mathcal{L} + \mathrm{KL}(q \mathrel{\Vert} p(z \mid x))$, and the KL is never negative. Since
# $\log p(x)$ does not depend on the encoder's parameters $\phi$, every change of $\phi$ that lowers
# $\mathrm{KL}(q \mathrel{\Vert} p(z \mid x))$ raises $\mathcal{L}$ by exactly as much: the minimizer of the KL is the
# maximizer of the ELBO. Over the decoder's $\theta$ as well, maximizing $\mathcal{L}$ raises the evidence and closes
# the gap at once. The table checks this on the trained model, where $H = 2$ lets $\log p(x)$ and the true posterior
# be computed on a grid over $z$: for the first test image (a 7) $\log p(x)$ is -93.47 nats and
# $\mathcal{L} + \mathrm{KL}(q \mathrel{\Vert} p(z \mid x))$ equals it to within 2e-5 nats (in the saved run). Every
# $q$ tried gives $\mathcal{L} \le \log p(x)$, and the closer $q$ is to $p(z \mid x)$, the smaller the gap: 0.029 nats
# for a Gaussian fitted to the true posterior, 0.28 for the encoder's $q$, 210 for the prior $\mathcal{N}(0, I)$.
#
# Part 2 splits the ELBO into the two terms of Task 2's loss and gives the KL's closed form:

# %%
show_md(derivation(2))
show_md(checks_table(findings, 2))

# %% [markdown]
# ### (b) The constrained problem and the Lagrange multiplier $\lambda$

# %%
show_md(derivation(3))
show_md("**Checked numerically** on the four models of Problem 3:")
show_md(checks_table(findings, 3))

# %% [markdown]
# By (a), minimizing $\mathrm{KL}(q \mathrel{\Vert} p(z \mid x))$ is maximizing
# $\mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q \mathrel{\Vert} p(z))$. Holding the KL to the prior under a budget
# $\epsilon > 0$ and maximizing the reconstruction gives the Lagrangian
# $F = \mathbb{E}_q[\log p(x \mid z)] - \lambda (\mathrm{KL}(q \mathrel{\Vert} p(z)) - \epsilon)$ with a multiplier
# $\lambda \ge 0$ (KKT). The term $\lambda \epsilon$ does not depend on $\theta$ or $\phi$, so it moves no maximizer:
# maximizing $F$ is maximizing
# $\mathcal{L}^* = \mathbb{E}_q[\log p(x \mid z)] - \lambda \mathrm{KL}(q \mathrel{\Vert} p(z))$, the homework's loss,
# and $\lambda = 1$ is the ELBO. Complementary slackness makes the constraint bind when $\lambda > 0$, and $\lambda$
# is the price of one more nat of KL, so a larger $\lambda$ goes with a tighter budget (a smaller $\epsilon$): the
# runs of Problem 3 end with less KL the larger their $\lambda$, 6.83, 4.48, 3.05 and 0.00 nats at $\lambda$ = 1, 5,
# 10, 40 in the saved run, as the checks above show.

# %% [markdown]
# ## Problem 2: the latent size $H$ at $\lambda = 1$

# %%
members2, ablation2 = ablations["problem2"]
shown2 = sweep.first_seed(members2, problem2)  # one model per setting (here: each member)
show_md(to_markdown(ablation2.rows))
show(figures.compare_samples(shown2, problem2.varies))

# %% [markdown]
# Test images (top row) and each model's reconstruction of them, the KL each latent dimension carries, and the
# training curves:

# %%
show(figures.compare_reconstructions(shown2, problem2.varies, data.test.images))
show(figures.kl_per_dim_bars(shown2, problem2.varies, [row["kl_per_dim"] for row in ablation2.rows]))
show(figures.compare_curves(members2, problem2.varies))

# %% [markdown]
# **The comparison.** With $H = 2$ the random samples are smooth, blurry, thick-stroked digits of few styles, many of
# them blends of two classes (4 and 9, 3, 5 and 8), because a 2-D code has to place all ten classes side by side in
# one plane. At $H = 10$ the samples are sharp and varied (slant, stroke width, loops), but some are broken or
# unreadable strokes; $H = 25$ and $H = 50$ look much like $H = 10$. The table says the same in numbers: the test
# reconstruction term falls from 131.1 nats at $H = 2$ to 82.6 at $H = 10$, then only to 79.1 and 80.8, and the
# negative ELBO from 137.9 to 100.6, 98.8 and 99.6 (the importance-weighted bound on $-\log p(x)$: 135.8, 97.6,
# 95.6, 96.5). The KL rises from 6.8 to 18.0 nats at $H = 10$ and then stays near 19: the code carries more about each
# image up to $H = 10$ and hardly more beyond. The reason is in the KL-per-dimension bars: 9 of 10 latents are used at
# $H = 10$, and only 11 of 25 and 10 of 50 at the larger sizes; the others collapse to the prior and the decoder
# ignores them. The reconstructions show what the bound measures: at $H = 2$ the 5 comes back as an 8 and the 9 and 8
# are blurred; at $H \ge 10$ every digit keeps its shape but that 5, which $H = 10$ and $H = 25$ still bend towards a 6
# and only $H = 50$ gets right.
#
# **Strengths and weaknesses.** A small $H$ is a strong bottleneck: the latent space is compact and can be drawn and
# sampled in full (every point of the 2-D plane decodes to a plausible digit, as in Problem 3), samples are always
# digit-like, and the model cannot memorize; but it underfits: blurry reconstructions that merge similar classes, and
# a bound about 38 nats worse. A large $H$ gives much better reconstructions and likelihood and more varied samples,
# but the code cannot be visualized or walked through, its posteriors fill only part of a 25- or 50-dimensional prior,
# so more samples from $\mathcal{N}(0, I)$ land where no image was encoded (the broken strokes), and most of the extra
# dimensions are wasted (40 of 50 inactive here): more parameters and compute for almost no gain beyond $H = 10$.

# %% [markdown]
# ## Problem 3: the KL weight $\lambda$ at $H = 2$
#
# For each $\lambda$, a 15 x 15 grid of latent points, one row per value of `z[1]` and one column per value of `z[0]`
# (the same inverse-normal-CDF grid for every panel, not random samples), each decoded to its image and placed at its
# $z$, as in Figure 3 of the homework:

# %%
members3, ablation3 = ablations["problem3"]
shown3 = sweep.first_seed(members3, problem3)
show_md(to_markdown(ablation3.rows))
show(figures.compare_manifolds(shown3, problem3.varies))

# %% [markdown]
# The $\lambda = 1$ model's manifold at full size, 20 x 20 decodes, and the other figures of the sweep:

# %%
grid = figures.latent_grid(vaecli.load_run(shown3[0].path), n=20)  # lam = 1
show(grid)
figures.save(grid, OUT / "problem3" / "grid_lam1.png")
show(figures.compare_reconstructions(shown3, problem3.varies, data.test.images))
show(figures.compare_curves(members3, problem3.varies))

# %% [markdown]
# **The comparison.** At $\lambda = 1$ the plane holds all ten digits, each in a region of its own (7, 9 and 4 at the
# bottom, 1 on the left, 8, 5, 3 and 2 in the middle, 6 and 0 on the right), with smooth transitions and, within a
# class, changes of slant and width. At $\lambda = 5$ the classes are still there but the 4 has shrunk to a small region
# beside the 9 and the styles vary less. At $\lambda = 10$ the plane is ordered almost along `z[1]` alone, in bands of
# prototypes (0, 6, 2, 3, 9 and 7 from top to bottom, with 1 and 8 down the left edge): `z[0]` barely matters, the 4 and
# the 5 are gone, and so are the styles. At $\lambda = 40$ every point of the plane decodes to the same blurry average
# digit: the posterior has collapsed to the prior (KL 0.00 nats, 0 of 2 active units, from the first epoch on), and the
# decoder ignores $z$. In numbers: as $\lambda$ goes 1, 5, 10, 40, the test KL falls 6.83, 4.48, 3.05, 0.00 nats, the
# reconstruction term rises 131.1, 139.5, 151.5, 205.8, and the $\lambda$-free negative ELBO worsens 137.9, 144.0,
# 154.5, 205.8; the reconstructions go from recognizable digits to one blob for every image.
#
# **The difference, and the advantage of a larger KL weight.** $\lambda$ sets the price of information: each nat the
# code carries about $x$ must buy $\lambda$ nats of reconstruction (Problem 1 (b): a larger $\lambda$ is a tighter KL
# budget $\epsilon$). A small $\lambda$ gives an informative code and sharp reconstructions, but the posteriors may
# spread away from $\mathcal{N}(0, I)$, leaving holes where random samples decode to nonsense. A larger $\lambda$
# keeps every posterior close to the prior: the latent space is smoother and filled more evenly, so sampling and
# interpolation stay on plausible images, and the code keeps only the factors of variation that pay for their KL. At
# $H = 2$ on MNIST the code is already too small, so a larger $\lambda$ only costs reconstruction, up to collapse at
# 40. With more complex data and a larger $H$ the balance turns: with $\lambda = 1$ a large code can spend its
# capacity on details of individual images (memorizing them, overfitting) and leave its dimensions entangled, with
# holes between the training codes. A larger $\lambda$ (the $\beta$-VAE, Higgins et al. 2017) is then a stronger
# information bottleneck and regularizer: it switches off the dimensions that are not needed, pushes the remaining
# ones towards independent, interpretable (disentangled) factors of variation, and makes the aggregate posterior a
# better match of the prior, so samples from $\mathcal{N}(0, I)$ are better and the latent space is usable for
# interpolation and downstream tasks. A large $H$ also leaves room to pay the KL price without losing the information
# that matters. The price is blurrier reconstructions and a worse likelihood, and a $\lambda$ too large for the code
# collapses the posterior, as $\lambda = 40$ does here.
