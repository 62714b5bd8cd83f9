"""The command line: parse, build a config, call one library function, render.

The only package that imports typer or rich. Each command lives in a module of
its own and registers itself on `app` when imported here. torch and matplotlib
are imported inside commands, so `vaecli --help` stays fast.
"""

# import order is the order of --help
from vaecli.cli import train  # noqa: I001, F401  (each import registers its commands)
from vaecli.cli import figures  # noqa: F401
from vaecli.cli import ablate  # noqa: F401
from vaecli.cli import derive  # noqa: F401
from vaecli.cli import explore  # noqa: F401
from vaecli.cli import evaluate, store  # noqa: F401
from vaecli.cli.app import app
from vaecli.cli.threads import choose_wait_policy


def main() -> None:
    choose_wait_policy()  # before a command imports torch
    app()


__all__ = ["app", "main"]
