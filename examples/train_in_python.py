"""Train, save and reload a VAE from Python, as a notebook would.

    python examples/train_in_python.py [DATA_DIR] [EPOCHS]

DATA_DIR defaults to $VAECLI_DATA_DIR (or the download cache). Uses only the
public API of the `vaecli` package.
"""

import sys
from pathlib import Path

import torch

from vaecli import ModelConfig, TrainConfig, load_dataset, load_run, save_run, train

data_dir = sys.argv[1] if len(sys.argv) > 1 else None
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2

config = TrainConfig(model=ModelConfig(latent_dim=2), lam=1.0, epochs=epochs)
data = load_dataset("mnist", data_dir)
result = train(config, data, device="auto")
for record in result.history:
    print(
        f"epoch {record.epoch}: test recon {record.test.recon:.1f}, KL {record.test.kl:.2f}, "
        f"-ELBO {record.test.neg_elbo:.1f} nats"
    )

run = save_run(Path("runs") / "from-python", result)
reloaded = load_run(run.path)
z = torch.zeros(1, 2)  # the centre of the latent plane
same = torch.equal(reloaded.model.decode_mean(z), result.model.decode_mean(z))
print(f"saved to {run.path}; reloaded model decodes identically: {same}")
