"""The Typer app, its one error path, and the root options (--version)."""

import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperArgument, TyperGroup, TyperOption

from vaecli import __version__
from vaecli.errors import Interrupted, VaeError
from vaecli.options import flag_of

# click's own error base (typer vendors click and exports only BadParameter and TyperException above it)
ClickException: type[typer.TyperException] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

stderr = Console(stderr=True, soft_wrap=True)


_value_shown = TyperOption.display_type_rich


def _flag_shows_no_value(self: TyperOption, ctx: Any) -> str | None:
    """--help's type column for an option: empty for a flag, which takes no value (typer 0.29 shows `<bool>`
    after every flag, --quiet and --help included, as if one had to type a value)."""
    return None if self.is_flag else _value_shown(self, ctx)


_argument_shown = TyperArgument.display_type_rich


def _list_shows_its_items(self: TyperArgument, ctx: Any) -> str | None:
    """--help's type column for an argument: `<path>...` for several paths, not the annotation `<list[Path]>`."""
    shown = _argument_shown(self, ctx)
    if shown and shown.startswith("<list[") and shown.endswith("]>"):
        return f"<{shown[6:-2].lower()}>..."
    return shown


# what --help shows is what a user types (typer's own help shows Python's annotations there)
TyperOption.display_type_rich = _flag_shows_no_value  # type: ignore[method-assign]
TyperArgument.display_type_rich = _list_shows_its_items  # type: ignore[method-assign,assignment]


def stdout(quiet: bool = False, **settings: Any) -> Console:
    """The console a command prints to. Where stdout is not a terminal (a log file, a pipe, a notebook's
    cell) lines are not broken at 80 columns, so that a log keeps each line whole."""
    return Console(quiet=quiet, soft_wrap=not sys.stdout.isatty(), **settings)


F = TypeVar("F", bound=Callable[..., Any])


DEBUG = "VAECLI_DEBUG"  # set to 1: the full traceback behind every `error:` line
FIELD = re.compile(r"`([a-z][a-z0-9_]*)`")  # a config field or parameter, as library errors name them
PARAMETERS = {
    "store": "runs_dir",
    "address": "cluster",
}  # the library's name of a parameter -> the command's, where they differ


def fail(message: str, code: int = 1) -> None:
    """Print one `error: ...` line on stderr (behind the traceback, with VAECLI_DEBUG=1) and exit with `code`."""
    if os.environ.get(DEBUG, "") not in ("", "0"):
        traceback.print_exc()
    stderr.print(Text.assemble(("error: ", "bold red"), message))
    sys.exit(code)


def in_flags(message: str, command: Any = None) -> str:
    """A library message as the command line says it: each `field` or `parameter` it names (latent_dim,
    kl_warmup, data_dir) becomes the flag that sets it (--hidden, --kl-warmup, --data-dir)."""

    def flag(match: re.Match) -> str:
        name = PARAMETERS.get(match.group(1), match.group(1))
        known = flag_of(name)
        if known is None and command is not None:
            params = {p.name: p for p in getattr(command, "params", [])}
            opts = getattr(params.get(name), "opts", None)
            known = opts[0] if opts and opts[0].startswith("--") else None
        return known or "--" + name.replace("_", "-")

    return FIELD.sub(flag, message)


def reflow(help_text: str | None) -> str | None:
    """A docstring's paragraphs each as one line, for rich to wrap at the terminal's width (typer keeps
    the source's line breaks, which at 80 columns break every line that was longer than 76)."""
    if help_text is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(help_text).split("\n\n"))


class Group(TyperGroup):
    """Turns every error a user can fix into one line on stderr and a non-zero exit; help wraps to the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            command.help = reflow(command.help)

    _invoked: Any = None  # the subcommand being run, whose parameters a library error may name

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        self._invoked = command
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside training: typer would exit silently
            raise Interrupted("interrupted") from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except VaeError as e:
            fail(in_flags(str(e), self._invoked), e.exit_code)
        except ClickException as e:
            # the program is always vaecli here, also under a test runner that names it otherwise
            ctx = getattr(e, "ctx", None)
            command = " ".join(["vaecli", *ctx.command_path.split()[1:]]) if ctx else ""
            hint = f" (see '{command} --help')" if command else ""
            fail(e.format_message() + hint, e.exit_code)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def command(name: str | None = None, **settings: Any) -> Callable[[F], F]:
    """Mark a function as a command, with typer's settings for it (`cls=`, `rich_help_panel=`); nothing is
    registered until `register` puts it on the app, in the one list of commands (vaecli/cli/__init__.py)."""

    def mark(function: F) -> F:
        function.__vaecli_command__ = (name, settings)  # type: ignore[attr-defined]
        return function

    return mark


def register(commands: Sequence[Callable[..., Any]]) -> typer.Typer:
    """Put `commands` (marked by `command`) on the app, in this order: the order of --help."""
    for function in commands:
        name, settings = function.__vaecli_command__  # type: ignore[attr-defined]
        app.command(name, **settings)(function)
    return app


app = typer.Typer(
    cls=Group,
    help="Train and understand Variational Autoencoders on MNIST-like data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"vaecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train and understand Variational Autoencoders on MNIST-like data."""
