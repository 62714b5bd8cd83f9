"""Start-up time: `vaecli --help` imports neither torch nor matplotlib; benchmarks/bench_startup.py lists it all."""

import subprocess
import sys

from tests.conftest import load_script


def test_no_help_imports_torch_or_matplotlib():
    """`vaecli --help` and every `vaecli <command> --help`, each in a fresh process."""
    probe = (
        "import sys\nfrom vaecli.cli import app\n"
        "try:\n    app(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    bench = load_script("bench_startup.py")
    commands = bench.subcommands()
    assert {"train", "grid", "ablate", "derive", "explore"} <= set(commands)
    for command in ["", *commands]:
        argv = [sys.executable, "-c", probe, *([command] if command else [])]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert out.strip().endswith("[]"), (command, out)


def test_startup_benchmark_lists_every_command(capsys):
    assert load_script("bench_startup.py").main(["--runs", "1"]) in (0, 1)  # 1: slow here, not broken
    out = capsys.readouterr().out
    assert "vaecli --help" in out and "vaecli train --help" in out and "vaecli derive --help" in out
    assert "torch, matplotlib or numpy imported by --help: none" in out
