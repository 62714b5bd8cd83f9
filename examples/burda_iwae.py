"""The trend of Burda, Grosse & Salakhutdinov (2016), Table 1, at a budget that fits a laptop.

    python examples/burda_iwae.py --data-dir ../shared/data                # 10 epochs each, IW-5000 scores
    python examples/burda_iwae.py --data-dir DIR --epochs 2 --iw-samples 500   # a quicker look

The paper's one-stochastic-layer models on dynamically binarized MNIST: 784-200-200-50
(two deterministic layers of 200 units, 50 latents; vaecli's layers are ReLU where the
paper's are tanh), trained for 3280 epochs as a VAE and as IWAEs with k = 5 and k = 50,
and scored by the importance-weighted bound with 5000 samples on the test set. Here each
trains for --epochs (the same number of passes over the data for all three: the paper's
notion of an equal budget), through the run store, so a second call reuses them; each is
then scored with `vaecli eval --iw-samples 5000`, and our table is printed beside the paper's.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from vaecli import ModelConfig, Sweep, SweepOptions, TrainConfig, load_dataset, run_sweep

PAPER = {"VAE": 86.76, "IWAE, k = 5": 85.54, "IWAE, k = 50": 84.78}  # NLL by IW-5000, Table 1, 3280 epochs

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", type=Path, default=None, help="folder holding MNIST/raw (default: $VAECLI_DATA_DIR)")
parser.add_argument("--epochs", type=int, default=10, help="epochs of every model (default 10)")
parser.add_argument("--iw-samples", type=int, default=5000, help="samples of the scoring bound (default 5000)")
parser.add_argument("--runs-dir", type=Path, default=None, help="the run store (default: $VAECLI_RUNS or ./runs)")
parser.add_argument("--device", default="auto")
args = parser.parse_args()

base = TrainConfig(model=ModelConfig(latent_dim=50, hidden_layers=(200, 200)), epochs=args.epochs, binarize=True)
data = load_dataset("mnist", args.data_dir)
options = SweepOptions(store=args.runs_dir, device=args.device, iw_samples=None)
vae = run_sweep(Sweep(base, lams=(1.0,)), data, options)
iwae = run_sweep(Sweep(base, vary=(("objective", ("iwae",)), ("k", (5, 50)))), data, options)  # side by side
members = {"VAE": vae[0], "IWAE, k = 5": iwae[0], "IWAE, k = 50": iwae[1]}

env = {**os.environ, **({"VAECLI_DATA_DIR": str(args.data_dir)} if args.data_dir else {})}
print(
    f"\nTest NLL (nats), IW bound with k = {args.iw_samples}; ours after {args.epochs} epochs, the paper's after 3280"
)
print(f"{'model':14} {'ours':>8} {'paper':>8} {'ours - paper':>13}   run")
ours = {}
for name, member in members.items():
    if member.error is not None:
        sys.exit(f"{name} failed: {member.error}")
    command = [sys.executable, "-m", "vaecli", "eval", str(member.path), "--iw-samples", str(args.iw_samples)]
    result = subprocess.run([*command, "--json", "--device", args.device], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(result.stderr.strip())
    ours[name] = json.loads(result.stdout)["iw_nll"]
    print(f"{name:14} {ours[name]:8.2f} {PAPER[name]:8.2f} {ours[name] - PAPER[name]:+13.2f}   {member.path.name}")
vae_nll = ours["VAE"]
for name in ("IWAE, k = 5", "IWAE, k = 50"):
    print(f"{name} beats the VAE by {vae_nll - ours[name]:.2f} nats (the paper: {PAPER['VAE'] - PAPER[name]:.2f})")
