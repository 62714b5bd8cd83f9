"""How fast vaecli starts: `vaecli --help` and every `vaecli <command> --help`, against `import torch`.

    python benchmarks/bench_startup.py            # 5 runs of each, medians
    python benchmarks/bench_startup.py --runs 1   # a smoke run

Commands import torch and matplotlib only when they run, so their help must
cost a fraction of importing torch. Each command's help and `import torch`
take turns, so a noisy machine slows both alike. `python -X importtime` then
lists what `vaecli --help` imports, heaviest first.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 0.25  # --help under a quarter of `import torch`
HEAVY = ("torch", "matplotlib", "numpy")


def vaecli_command() -> list[str]:
    exe = Path(sys.executable).with_name("vaecli")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "vaecli"]


def median_seconds(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    """The median wall time of each command, the commands taking turns `runs` times."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def subcommands() -> list[str]:
    """The names of vaecli's commands, from its Typer app."""
    import typer

    from vaecli.cli import app

    return sorted(typer.main.get_command(app).commands)


def imported_by_help() -> list[tuple[int, str]]:
    """(cumulative microseconds, top-level module) of what `vaecli --help` imports, heaviest first."""
    probe = "from vaecli.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe], check=True, capture_output=True, text=True
    ).stderr
    tops = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            tops.append((int(parts[1]), parts[2].strip()))
    return sorted(tops, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    args = parser.parse_args(argv)

    base = vaecli_command()
    commands = {"vaecli --help": [*base, "--help"]}
    commands |= {f"vaecli {name} --help": [*base, name, "--help"] for name in subcommands()}
    commands["import torch"] = [sys.executable, "-c", "import torch"]
    seconds = median_seconds(commands, args.runs)
    torch_seconds = seconds.pop("import torch")

    print(f"medians of {args.runs} runs; `python -c 'import torch'` takes {torch_seconds:.3f} s")
    print(f"{'command':32} {'seconds':>8} {'/ import torch':>15}")
    worst = 0.0
    for name, value in seconds.items():
        ratio = value / torch_seconds
        worst = max(worst, ratio)
        print(f"{name:32} {value:8.3f} {ratio:15.3f}")
    tops = imported_by_help()
    heavy = sorted({name.split(".")[0] for _, name in tops if name.split(".")[0] in HEAVY})
    print("heaviest imports of `vaecli --help`: " + ", ".join(f"{n} {us / 1e3:.0f} ms" for us, n in tops[:5]))
    print(f"torch, matplotlib or numpy imported by --help: {', '.join(heavy) or 'none'}")
    ok = worst < TARGET and not heavy
    print(f"slowest help / import torch: {worst:.3f}  target < {TARGET}: {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
