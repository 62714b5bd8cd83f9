"""Members of one architecture trained together, as one stacked model.

Every linear layer holds all M members' weights, (M, in, out), and runs as one
batched matrix product over the member axis (torch.baddbmm). Member m starts
from trainer.build_model's weights for its config, sees the batches and noise
its own seed gives it in trainer.train, and its loss term reaches only its own
slice of the weights; Adam is elementwise, so one Adam over the stack is M
Adams. Each member therefore ends where training it alone ends, up to float
rounding (the products add in another order).

Members may differ in lam, seed and latent size; a smaller latent size is
zero-padded to the largest (see StackedVAE), everything else must be equal.
"""

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.config import TrainConfig
from vaecli.data import Dataset
from vaecli.errors import ConfigError
from vaecli.loss import kl_divergence, reconstruction_nll
from vaecli.metrics import EpochRecord, Terms, evaluate, scored_test_images
from vaecli.model import VAE, VAEOutput
from vaecli.trainer import (
    Observer,
    TrainResult,
    _check_data,
    _eval_generator,
    _generators,
    _optimizer,
    _step_noise,
    build_model,
    resolve_device,
    resolve_precision,
)


def stack_key(config: TrainConfig) -> TrainConfig:
    """What members must share to train stacked: the config with lam, seed and latent size set aside."""
    return replace(config, lam=0.0, seed=0, model=replace(config.model, latent_dim=1))


def stackable(config: TrainConfig) -> bool:
    """Eager steps only: a compiled step of another shape would not round like the member trained alone."""
    return not config.compile


class StackedLinear(nn.Module):
    """M linear layers as one: (M, B, in) -> (M, B, out) in one batched matrix product."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        n_in, n_out = max(la.in_features for la in layers), max(la.out_features for la in layers)
        weight, bias = torch.zeros(len(layers), n_in, n_out), torch.zeros(len(layers), 1, n_out)
        for m, layer in enumerate(layers):  # a smaller layer fills the top-left corner, zeros elsewhere
            weight[m, : layer.in_features, : layer.out_features] = layer.weight.detach().T
            bias[m, 0, : layer.out_features] = layer.bias.detach()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)  # (M, in, out), (M, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    @torch.no_grad()
    def copy_into(self, m: int, layer: nn.Linear) -> None:
        """Member m's weights into a plain linear layer of its own size."""
        layer.weight.copy_(self.weight[m, : layer.in_features, : layer.out_features].T)
        layer.bias.copy_(self.bias[m, 0, : layer.out_features])


class StackedVAE(nn.Module):
    """M VAEs of one architecture as one model: inputs, outputs and noise carry a leading member axis.

    Latent sizes are padded to the largest, H: the padded units of mu and logvar
    have zero weights and bias, so they output 0; their eps is 0, so z is 0
    there, and the decoder's first layer has zero weights for them. Every
    gradient reaching a padded weight is a product with one of these zeros, the
    KL of N(0, 1) is 0 with gradient 0, and Adam makes zero gradients zero
    steps: the padding stays exactly zero and changes no real unit.
    """

    def __init__(self, models: Sequence[VAE]) -> None:
        super().__init__()
        self.configs = [m.config for m in models]
        self.latent_dim = max(c.latent_dim for c in self.configs)
        layers = [StackedLinear(group) for group in zip(*(m.linears() for m in models), strict=True)]
        depth = len(self.configs[0].hidden_layers)
        self.encoder = nn.ModuleList(layers[:depth])
        self.mu, self.logvar = layers[depth], layers[depth + 1]
        self.decoder = nn.ModuleList(layers[depth + 2 :])

    def __len__(self) -> int:
        return len(self.configs)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> VAEOutput:
        """(M, B, D) images and (M, B, H) noise -> VAEOutput with a leading member axis."""
        h = x
        for layer in self.encoder:
            h = torch.relu_(layer(h))  # in place, as model.py: baddbmm's backward needs its input, not its output
        mu, logvar = self.mu(h), self.logvar(h)
        z = VAE.reparameterize(mu, logvar, eps=eps)
        h = z
        for layer in self.decoder[:-1]:
            h = torch.relu_(layer(h))
        return VAEOutput(self.decoder[-1](h), mu, logvar, z)

    def member(self, m: int) -> VAE:
        """Member m as a plain VAE of its own latent size, on the stack's device (a copy)."""
        with torch.device("meta"):  # no initialization: no global RNG draws, no wasted work
            model = VAE(self.configs[m])
        model.to_empty(device=self.mu.weight.device)
        for stacked, layer in zip(self.layers(), model.linears(), strict=True):
            stacked.copy_into(m, layer)
        return model

    def layers(self) -> list[StackedLinear]:
        return [*self.encoder, self.mu, self.logvar, *self.decoder]


def member_terms(out: VAEOutput, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's recon and KL, means over its batch as in loss.vae_loss: (M,), (M,)."""
    members, batch = x.shape[:2]
    recon = reconstruction_nll(out.logits.flatten(0, 1), x.flatten(0, 1), kind)
    kl = kl_divergence(out.mu.flatten(0, 1), out.logvar.flatten(0, 1))
    return recon.view(members, batch).mean(1), kl.view(members, batch).mean(1)


def _check_members(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ConfigError("stacked training needs at least one member")
    if len({stack_key(c) for c in configs}) > 1:
        raise ConfigError("stacked members must share everything but lam, seed and latent size; train them apart")
    if not stackable(configs[0]):
        raise ConfigError("stacked training cannot --compile; train these members apart")


def train_stacked(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    device: str = "auto",
    observer: Observer | None = None,
) -> list[TrainResult]:
    """Train the members together; each result equals trainer.train(config) alone up to float rounding.

    The observer sees on_start once, with the first member's config; on_batch
    per stacked step; on_epoch once per member each epoch, in the members'
    order. A member's seconds are its share, 1/M, of the group's.
    """
    _check_members(configs)
    observer = observer or Observer()
    dev = resolve_device(device)
    for config in configs:
        _check_data(config, data)
    data = data.to(dev)
    first, members = configs[0], len(configs)
    model = StackedVAE([build_model(c) for c in configs]).to(dev)
    optimizer = _optimizer(model, first, dev)
    generators = [_generators(c, dev) for c in configs]
    test_images = [scored_test_images(data.test.images, c) for c in configs]
    lam = torch.tensor([c.lam for c in configs], device=dev)  # (M,)
    train_images = data.train.images
    n, batch_size = len(train_images), first.batch_size
    steps = math.ceil(n / batch_size)
    precision = resolve_precision(first.precision, dev)
    bf16 = precision == "bf16"
    observer.on_start(first, steps, dev)

    histories: list[list[EpochRecord]] = [[] for _ in configs]
    started = time.perf_counter()
    for epoch in range(1, first.epochs + 1):
        epoch_start = time.perf_counter()
        orders = [torch.randperm(n, generator=shuffle).to(dev) for shuffle, _ in generators]
        sums = torch.zeros(members, 2, dtype=torch.float64, device=dev)  # recon, KL summed over images
        for step in range(steps):
            xs, eps = [], []
            for config, order, (_, noise_gen) in zip(configs, orders, generators, strict=True):
                index = order[step * batch_size : (step + 1) * batch_size]
                x, e = _step_noise(train_images.index_select(0, index), config, noise_gen)
                xs.append(x)
                eps.append(F.pad(e, (0, model.latent_dim - e.shape[1])))  # zero noise in the padding
            x = torch.stack(xs)  # (M, B, D)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):  # as trainer._batch_loss
                out = model(x, torch.stack(eps))
            if bf16:
                out = VAEOutput(*(t.float() for t in out))
            recon, kl = member_terms(out, x, first.model.recon)
            loss = (recon + lam * kl).sum()  # member m's gradient is its own loss's, as if alone
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums.add_(torch.stack((recon, kl), dim=1).detach(), alpha=x.shape[1])
            observer.on_batch(epoch, step + 1)
        seconds = (time.perf_counter() - epoch_start) / members
        for m, (config, (recon_sum, kl_sum)) in enumerate(zip(configs, sums.tolist(), strict=True)):
            test_terms = evaluate(model.member(m), test_images[m], _eval_generator(config, dev))
            record = EpochRecord(epoch, config.lam, Terms(recon_sum / n, kl_sum / n), test_terms, seconds)
            histories[m].append(record)
            observer.on_epoch(record)

    seconds = (time.perf_counter() - started) / members
    return [
        TrainResult(config, model.member(m).eval().cpu(), history, str(dev), seconds, str(data.source), precision)
        for m, (config, history) in enumerate(zip(configs, histories, strict=True))
    ]
