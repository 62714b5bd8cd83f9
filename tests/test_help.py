"""--help shows what a user types: no value after a flag, items rather than Python's annotations."""

import pytest

from tests.conftest import invoke
from vaecli.cli import app

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def test_every_command_is_registered_once_in_the_order_of_help():
    order = ["train", "sample", "grid", "recon", "traverse", "latent", "ablate", "derive", "explore", "eval", "info"]
    assert COMMANDS == [*order, "runs"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_annotations(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = invoke(command, "--help").stdout
    assert "--help" in text and "<bool>" not in text and "<list[" not in text, text
