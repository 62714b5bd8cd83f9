"""The command line: parse, build a config, call one library function, render.

The only package that imports typer or rich. Each command lives in a module of
its own and registers itself on `app` when imported here. torch and matplotlib
are imported inside commands, so `vaecli --help` stays fast.
"""

from vaecli.cli import derive, train  # noqa: F401  (registers the command)
from vaecli.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
