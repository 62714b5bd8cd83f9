"""FactorVAE in training (Kim & Mnih 2018): the VAE and its discriminator, each with its own Adam.

Each step: the VAE minimises recon + lam * KL + gamma * TC, TC the discriminator's estimate on the
batch's codes; then the discriminator learns to tell those codes from the same codes with each
dimension shuffled across the batch (as disentanglement_lib does, on the same batch rather than
the paper's second one). The shuffle of step t is drawn from a generator seeded by the run's seed
and t, so a resumed fit shuffles as the uninterrupted one; the discriminator's weights and Adam
state travel in the fit's state beside the VAE's (`discriminator.` names, Adam indices after the
VAE's), so a resume is bit for bit. It trains through autograd and is never stacked.
"""

from collections.abc import Sequence

import torch

from vaecli.config import TrainConfig
from vaecli.core import discriminator as disc
from vaecli.core.loss import kl_divergence, reconstruction_nll_sum
from vaecli.core.model import VAEOutput
from vaecli.engine.steps import (
    OneModel,
    build_model,
    load_optimizer_tensors,
    make_optimizer,
    optimizer_tensors,
    schedule,
    set_learning_rate,
)

PREFIX = "discriminator."


def build_discriminator(config: TrainConfig) -> disc.Discriminator:
    """The initial discriminator: the same for the same seed, whatever the global RNG holds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        return disc.Discriminator(config.model.latent_dim)


class FactorModel(OneModel):
    """A FactorVAE: OneModel's VAE and Adam, and the discriminator with its own Adam."""

    def __init__(self, config: TrainConfig, device: torch.device, precision: str, steps_per_epoch: int = 1) -> None:
        self.model = build_model(config).to(device)
        self.optimizer = make_optimizer(self.model, config, device)
        self.discriminator = build_discriminator(config).to(device)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=disc.LR, betas=disc.BETAS)
        self.config, self.steps_per_epoch, self.device = config, steps_per_epoch, device
        self.bf16 = precision == "bf16"

    def step(self, xs: list[torch.Tensor], eps: list[torch.Tensor], t: int) -> tuple[torch.Tensor, torch.Tensor]:
        config, x = self.config, xs[0]
        set_learning_rate(self.optimizer, config, t, self.steps_per_epoch)
        lam, _ = schedule(config, t, self.steps_per_epoch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x, eps=eps[0])
        out = VAEOutput(*(v.float() for v in out))
        recon = reconstruction_nll_sum(out.logits, x, config.model.recon) / len(x)
        kl = kl_divergence(out.mu, out.logvar).mean()
        tc = disc.total_correlation(self.discriminator(out.z))
        loss = recon + lam * kl + config.factor_gamma * tc
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        codes = out.z.detach()
        shuffle = torch.Generator(device=self.device).manual_seed(config.seed * 1_000_003 + t)
        d_loss = disc.discriminator_loss(
            self.discriminator(codes), self.discriminator(disc.permute_dims(codes, shuffle))
        )
        self.d_optimizer.zero_grad(set_to_none=True)  # also drops what the VAE's backward left in it
        d_loss.backward()
        self.d_optimizer.step()
        loss = loss.detach()
        return loss.view(1), torch.stack((recon.detach(), kl.detach(), loss)).view(1, 3)

    def member_tensors(self, m: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The VAE's and the discriminator's weights and Adam states, as one state's tensors."""
        weights, adam = super().member_tensors(m)
        weights |= {PREFIX + k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()}
        offset = len(list(self.model.parameters()))
        for key, value in optimizer_tensors(self.d_optimizer).items():
            index, name = key.split(".", 1)
            adam[f"{int(index) + offset}.{name}"] = value
        return weights, adam

    def load_members(self, tensors: Sequence[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]) -> None:
        (weights, adam), *_ = tensors
        mine = {k: v for k, v in weights.items() if not k.startswith(PREFIX)}
        theirs = {k.removeprefix(PREFIX): v for k, v in weights.items() if k.startswith(PREFIX)}
        offset = len(list(self.model.parameters()))
        vae_adam, d_adam = {}, {}
        for key, value in adam.items():
            index, name = key.split(".", 1)
            if int(index) < offset:
                vae_adam[key] = value
            else:
                d_adam[f"{int(index) - offset}.{name}"] = value
        self.model.load_state_dict(mine)
        load_optimizer_tensors(self.optimizer, vae_adam)
        self.discriminator.load_state_dict(theirs)
        load_optimizer_tensors(self.d_optimizer, d_adam)


def discriminator_shapes(config: TrainConfig) -> dict[str, tuple[int, ...]]:
    """The discriminator's state_dict shapes in a fit's state (prefixed), from the meta device."""
    with torch.device("meta"):
        return {PREFIX + k: tuple(v.shape) for k, v in disc.Discriminator(config.model.latent_dim).state_dict().items()}
