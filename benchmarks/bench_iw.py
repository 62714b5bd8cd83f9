"""The importance-weighted bound of `vaecli eval --iw-samples K` computed in several ways, taking turns.

    python benchmarks/bench_iw.py --data-dir /path/to/data            # MNIST in <dir>/MNIST/raw
    python benchmarks/bench_iw.py --data-dir DIR --run runs/h50       # that run (trained there first if missing)
    python benchmarks/bench_iw.py --data-dir DIR --quick              # a smoke run of seconds
    python benchmarks/bench_iw.py --data-dir DIR --only "blocks 4000" "bf16 all" --images 10000 --k 5000 --rounds 1

The model is a run's (--run), else an H = 50 model (784-512-256-50, --recon, binarized
MNIST) trained for --epochs first. Its bound on the first --images test images (scored
as `vaecli eval` scores them) is computed in rounds, each way once per round, the ways
taking turns going first, from one generator seed, so that every way draws the same
samples (all but the --batch ones, which draw them in other shapes):
  before          the code before blocks: one sample of every image per decode, (500, D)
                  logits, the likelihood of core/loss.reconstruction_nll
  blocks R        engine/bound.BlockDecoder (R = ROWS is the default): up to R rows (samples
                  x images) per decode, float32 layers through oneDNN on the CPU, the Bernoulli
                  x . logits from the last hidden layer (h . (x W) + x . b), softplus in place
  MKL R, fresh    the same through torch.addmm (MKL on the CPU) into fresh tensors
  MKL R, buffers  torch.addmm(out=) into buffers allocated once, ReLU in place
  x . logits      the default's layers, the likelihood as reconstruction_nll takes it
  bf16 hidden     the hidden layers in bfloat16 (oneDNN), the last one in float32
  bf16 all        every layer in bfloat16, as autocast would: the logits rounded to bf16
  batch N         the default, N images per batch instead of 500 (other draws)
Each speed is the median over rounds of the first way's seconds (before's, unless --only
names others) over the way's, measured in the same round. A way counts only if its bound
is within AGREE of the first way's.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import add_data_dir, check_data_dir, machine
from torch import nn

import vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.loss import reconstruction_nll
from vaecli.core.model import VAE
from vaecli.engine.bound import ROWS, BlockDecoder, importance_weighted_nll
from vaecli.engine.records import scored_test_images
from vaecli.store.checkpoint import load_run
from vaecli.store.runs import RunRequest, train_or_reuse

AGREE = 0.01  # nats: the most a way may move the bound and still count (the published numbers have two decimals)

Way = Callable[[VAE, torch.Tensor, int, torch.Generator], float]


class PerSample(BlockDecoder):
    """The code before blocks: each sample of every image decoded on its own through model.decode."""

    def __init__(self, model: VAE) -> None:
        super().__init__(model, rows=1)
        self.model = model

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        kind = self.kind
        return torch.stack([-reconstruction_nll(self.model.decode(z_i), self.x, kind) for z_i in z])


class MKL(BlockDecoder):
    """The float32 layers through torch.addmm, into fresh tensors or, with `buffers`, into ones allocated once."""

    def __init__(self, model: VAE, rows: int, buffers: bool) -> None:
        super().__init__(model, rows)
        self.onednn = None
        self.buffers: dict[nn.Linear, torch.Tensor] | None = {} if buffers else None

    def linear(self, layer: nn.Linear, h: torch.Tensor, relu: bool) -> torch.Tensor:
        if self.buffers is None:
            return super().linear(layer, h, relu)
        buffer = self.buffers.get(layer)
        if buffer is None or len(buffer) < len(h):
            buffer = self.buffers[layer] = h.new_empty(max(self.rows, len(h)), layer.out_features)
        out = torch.addmm(layer.bias, h, layer.weight.t(), out=buffer[: len(h)])
        return out.relu_() if relu else out


def direct_log_px_z(decoder: BlockDecoder, logits: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per row from the logits (rows, D), as core/loss.reconstruction_nll takes it."""
    batch = len(decoder.x)
    return -reconstruction_nll(logits.view(-1, batch, logits.shape[-1]), decoder.x, decoder.kind).view(-1)


class Direct(BlockDecoder):
    """The default's layers, the likelihood from the logits as core/loss.reconstruction_nll takes it."""

    def log_px_z(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return direct_log_px_z(self, logits)


class BF16(BlockDecoder):
    """The hidden layers, and with `last` the last one too, in bfloat16 through oneDNN, each output rounded to bf16."""

    def __init__(self, model: VAE, rows: int, last: bool) -> None:
        super().__init__(model, rows)
        self.last = last
        self.low = self.layers if last else self.layers[:-1]
        self.weights = {m: (m.weight.bfloat16(), m.bias.bfloat16()) for m in self.low}
        self.bf16 = torch.ops.mkldnn._linear_pointwise

    def linear(self, layer: nn.Linear, h: torch.Tensor, relu: bool) -> torch.Tensor:
        if layer not in self.weights:
            return super().linear(layer, h.float(), relu)
        weight, bias = self.weights[layer]
        out = self.bf16(h.bfloat16(), weight, bias, "relu" if relu else "none", [], "")
        return out if relu else out.float()  # the logits in float32 for the likelihood

    def log_px_z(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """As autocast's loss when the logits are bf16's, else the default's from the bf16 hidden layer."""
        return direct_log_px_z(self, logits) if self.last else super().log_px_z(h.float(), logits)


def ways(rows: list[int], batches: list[int], bf16: bool) -> dict[str, Way]:
    """name -> how it computes the bound; `before` first."""

    def with_decoder(make: Callable[[VAE], BlockDecoder], batch_size: int = 500) -> Way:
        return lambda model, x, k, g: importance_weighted_nll(model, x, k, g, batch_size, decoder=make(model))

    found = {"before": with_decoder(PerSample)}
    for r in rows:
        found[f"blocks {r}"] = with_decoder(lambda m, r=r: BlockDecoder(m, r))
    found[f"MKL {ROWS}, fresh"] = with_decoder(lambda m: MKL(m, ROWS, buffers=False))
    found[f"MKL {ROWS}, buffers"] = with_decoder(lambda m: MKL(m, ROWS, buffers=True))
    found["x . logits"] = with_decoder(lambda m: Direct(m, ROWS))
    if bf16:
        found["bf16 hidden"] = with_decoder(lambda m: BF16(m, ROWS, last=False))
        found["bf16 all"] = with_decoder(lambda m: BF16(m, ROWS, last=True))
    for b in batches:
        found[f"batch {b}"] = with_decoder(BlockDecoder, b)
    return found


def race(
    found: dict[str, Way], model: VAE, x: torch.Tensor, k: int, seed: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per round of each way, and each way's bound."""
    seconds: dict[str, list[float]] = {name: [] for name in found}
    bounds: dict[str, float] = {}
    names = list(found)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            bounds[name] = found[name](model, x, k, torch.Generator().manual_seed(seed))
            seconds[name].append(time.perf_counter() - start)
    return seconds, bounds


def trained_model(args: argparse.Namespace) -> tuple[VAE, TrainConfig, str]:
    """The run's model, config and a description; the run trained first where it holds no model."""
    config = TrainConfig(model=ModelConfig(latent_dim=args.hidden, recon=args.recon), epochs=args.epochs, binarize=True)
    if args.run is not None and (args.run / "model.safetensors").is_file():
        run = load_run(args.run)
        return run.model, run.config, f"run {args.run}"
    with tempfile.TemporaryDirectory() as store:
        folder = args.run or Path(store) / "run"
        outcome = train_or_reuse(RunRequest(config, out=folder, data_dir=args.data_dir, device="cpu"))
        return outcome.run.model, outcome.run.config, f"trained here ({args.epochs} epochs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(parser)
    parser.add_argument("--run", type=Path, help="a run folder to score; trained there (see --hidden) when missing")
    parser.add_argument("--hidden", type=int, default=50, help="latent size of the model trained (default 50)")
    parser.add_argument("--recon", choices=["bernoulli", "gaussian"], default="bernoulli", help="its likelihood")
    parser.add_argument("--epochs", type=int, default=2, help="its epochs (default 2)")
    parser.add_argument("--images", type=int, default=1000, help="test images scored (default 1000)")
    parser.add_argument("--k", type=int, default=500, help="samples of the bound (default 500)")
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 4000, ROWS, 25000], help="block sizes")
    parser.add_argument("--batch", type=int, nargs="*", default=[250, 1000], help="other images per batch")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="leave the bfloat16 ways out")
    parser.add_argument("--only", nargs="+", metavar="WAY", help="only these ways, by name, the first the reference")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each way once per round (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed, the same for every way")
    parser.add_argument("--quick", action="store_true", help="1 round, 100 images, k = 50: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images, args.k = 1, 100, 50
    check_data_dir(parser, args)

    model, config, origin = trained_model(args)
    model = model.cpu().eval()
    data = vaecli.load_dataset(config.dataset, args.data_dir)
    x = scored_test_images(data.test.images, config)[: args.images]
    found = ways(args.rows, args.batch, args.bf16 and torch.backends.mkldnn.is_available())
    if args.only:
        missing = [name for name in args.only if name not in found]
        if missing:
            parser.error(f"no way named {', '.join(map(repr, missing))}; the ways: {', '.join(map(repr, found))}")
        found = {name: found[name] for name in args.only}
    seconds, bounds = race(found, model, x, args.k, args.seed, args.rounds)

    layers = "-".join(map(str, (784, *config.model.hidden_layers, config.model.latent_dim)))
    print(f"vaecli {vaecli.__version__} importance-weighted bound benchmark, torch {torch.__version__}, "
          f"cpu ({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"machine: {machine()}")
    print(
        f"model {layers} ({config.model.recon}), {origin}; {len(x)} test images, k = {args.k}, {args.rounds} round(s)"
    )
    print()
    first = next(iter(found))
    print(f"{'way':16} {'speed':>6}  {'range':>12}  {'bound':>10}  {'minus ' + first:>16}  seconds per round")
    for name, times in seconds.items():
        ratios = [a / b for a, b in zip(seconds[first], times, strict=True)]
        spread = f"{min(ratios):.2f} to {max(ratios):.2f}"
        diff = bounds[name] - bounds[first]
        mark = " (other draws)" if name.startswith("batch") else "" if abs(diff) < AGREE else " (moves it too far)"
        rounds = " ".join(f"{s:.1f}" for s in times)
        print(f"{name:16} {statistics.median(ratios):>5.2f}x  {spread:>12}  {bounds[name]:>10.4f}  {diff:>+16.5f}  "
              f"{rounds}{mark}")  # fmt: skip
    print(f"(speed: the median over rounds of {first}'s seconds over this way's; more is faster. A way counts when "
          f"its bound is within {AGREE} nats of {first}'s.)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
