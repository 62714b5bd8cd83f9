"""The command line: parse, build a config, call one library function, render.

The only package that imports typer or rich. Each command lives in a module of
its own, marked by `command` (cli/app.py); the list below registers them all, in the
order of --help. torch and matplotlib are imported inside commands, so
`vaecli --help` stays fast.
"""

from vaecli.cli import ablate, derive, evaluate, explore, figures, store, train
from vaecli.cli.app import app, register
from vaecli.cli.threads import choose_wait_policy

register(
    [
        train.train,
        figures.sample,
        figures.grid,
        figures.recon,
        figures.traverse,
        figures.latent,
        ablate.ablate,
        derive.derive,
        explore.explore,
        evaluate.evaluate,
        store.info,
        store.runs,
    ]
)


def main() -> None:
    choose_wait_policy()  # before a command imports torch
    app()


__all__ = ["app", "main"]
