"""What the benchmark scripts share: the machine's description and a sweep's command-line options."""

import argparse
import os
import platform
from dataclasses import replace
from pathlib import Path

import torch

from vaecli.config import ModelConfig, TrainConfig


def machine() -> str:
    """The CPU as /proc/cpuinfo names it (Linux; else platform's word), its bfloat16 units, and its CPU count."""
    name, extras = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = fields.get("model name", name)
        if "cpu family" in fields:
            extras.append(f"family {fields['cpu family']} model {fields.get('model', '?')}")
        flags = fields.get("flags", "").split()
        extras += [label for flag, label in (("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")) if flag in flags]
    return ", ".join([name, *extras, f"{os.cpu_count()} logical CPUs"])


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read next counts it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("VAECLI_DATA_DIR"), help="holds MNIST/raw")


def check_data_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.data_dir is None:
        parser.error("give --data-dir (a folder holding MNIST/raw) or set VAECLI_DATA_DIR")


def add_sweep_options(parser: argparse.ArgumentParser, epochs: int) -> None:
    """The members of a sweep: every combination of --hidden, --lam and --seeds."""
    add_data_dir(parser)
    parser.add_argument("--lam", type=float, nargs="+", default=[1.0, 5.0, 10.0, 40.0], help="the members' lam")
    parser.add_argument("--hidden", type=int, nargs="+", default=[2], help="the members' latent sizes (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the members' seeds (default 0)")
    parser.add_argument("--layers", type=int, nargs="+", default=[512, 256], help="hidden layers (default 512 256)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs of every member (default {epochs})")


def sweep_configs(args: argparse.Namespace) -> list[TrainConfig]:
    base = TrainConfig(
        model=ModelConfig(hidden_layers=tuple(args.layers)), epochs=args.epochs, batch_size=args.batch_size
    )
    return [
        replace(base, model=replace(base.model, latent_dim=h), lam=lam, seed=seed)
        for h in args.hidden
        for lam in args.lam
        for seed in args.seeds
    ]


def describe_sweep(args: argparse.Namespace, members: int) -> str:
    layers = "-".join(map(str, (784, *args.layers)))
    return (
        f"{members} members (H {' '.join(map(str, args.hidden))}; lam {' '.join(f'{v:g}' for v in args.lam)}; "
        f"seeds {' '.join(map(str, args.seeds))}), model {layers}-H (mirrored), batch {args.batch_size}, "
        f"{args.epochs} epoch(s) each"
    )
