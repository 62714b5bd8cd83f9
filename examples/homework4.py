"""Homework 4 (VAE on MNIST) end to end, with the vaecli library alone.

    python examples/homework4.py --data-dir ../shared/data --out homework4

Task 1: the fully connected VAE. Task 2: the loss recon + lam * KL.
Problem 2: H = 2, 10, 25, 50 at lam = 1, compared by random samples.
Problem 3: lam = 1, 5, 10, 40 at H = 2, compared by their 2-D manifolds
(a regular grid of z, not random). Figures, tables and a report per problem
land in --out; trained models land in the run store and are reused next time.
"""

import argparse
from pathlib import Path

import torch

from vaecli import VAE, ModelConfig, TrainConfig, load_dataset, vae_loss
from vaecli.studies import sweep
from vaecli.studies.observer import SweepObserver
from vaecli.views.ablation import save_ablation

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", type=Path, default=None, help="folder holding MNIST/raw (default: $VAECLI_DATA_DIR)")
parser.add_argument("--out", type=Path, default=Path("homework4"), help="where figures and reports go")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--layers", type=int, nargs="+", default=[512, 256], help="encoder hidden layers")
parser.add_argument("--iw-samples", type=int, default=100)
parser.add_argument("--device", default="auto")
args = parser.parse_args()

data = load_dataset("mnist", args.data_dir)
model_config = ModelConfig(latent_dim=2, hidden_layers=tuple(args.layers))

# Task 1: encoder 784 -> layers -> (mu, logvar) of size H; z = mu + sigma * eps; mirrored decoder
print("Task 1: the network\n", VAE(model_config))

# Task 2: the loss with a weight on the KL term, its two terms reported apart
x = data.test.images[:128]
with torch.no_grad():
    out = VAE(model_config)(x, torch.Generator().manual_seed(0))
for lam in (1.0, 10.0):
    terms = vae_loss(out, x, lam, model_config.recon)
    print(
        f"Task 2, untrained model, lam={lam:g}: recon {terms.recon:.1f} + lam * KL {lam * terms.kl:.2f}"
        f" = {terms.total:.1f} nats per image"
    )

base = TrainConfig(model=model_config, epochs=args.epochs)
problems = {
    "problem2": sweep.Sweep(base, hidden=(2, 10, 25, 50)),  # samples across latent sizes, lam = 1
    "problem3": sweep.Sweep(base, lams=(1.0, 5.0, 10.0, 40.0)),  # manifolds across KL weights, H = 2
}


class Progress(SweepObserver):
    """One line per member as it starts training."""

    def observer(self, indices, configs):
        for i, c in zip(indices, configs, strict=True):
            print(f"  member {i + 1}: H={c.model.latent_dim}, lam={c.lam:g}")
        return super().observer(indices, configs)


options = sweep.SweepOptions(device=args.device, iw_samples=args.iw_samples)
for name, plan in problems.items():
    print(f"\n{name}: {plan.command()}")
    members = sweep.run_sweep(plan, data, options, observer=Progress())
    ablation = save_ablation(members, plan, data.test.images, args.out / name)
    print(sweep.to_markdown(ablation.rows))
    print(f"  figures and report.md in {args.out / name}")
