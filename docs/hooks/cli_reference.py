"""MkDocs hook: the CLI reference, rendered from the Typer app at build time, so it cannot drift from --help.

Typer apps are Click apps, but this Typer vendors click, so click's own doc plugins do
not recognise its commands; this walks `typer.main.get_command(app)` through the
Command API the vendored click keeps (make_context, collect_usage_pieces,
get_help_record). Two outputs:

- `reference/cli.md`, a generated page (never committed): every command's usage, help and options;
- a line `<!-- vaecli-options NAME -->` in any page becomes that command's usage and options table.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection
from typing import Any

MARKER = re.compile(r"^<!-- vaecli-options (\S+) -->$", re.MULTILINE)
PAGE = "reference/cli.md"
NAMES = re.compile(r"^((?:-{1,2}[^\s,/]+)(?:(?:, | / )-{1,2}[^\s,/]+)*)\s*(.*)$")  # "-H, --hidden <int range>"
EXTRA = re.compile(r"^(.*?)(?:\s{2}\[([^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\])?$", re.DOTALL)  # "help  [default: 2]"


def _root() -> tuple[Any, Any]:
    import typer

    from vaecli.cli import app

    root = typer.main.get_command(app)
    return root, root.make_context("vaecli", [], resilient_parsing=True)


def _commands() -> dict[str, tuple[Any, Any]]:
    """name -> (command, its context), in --help's order."""
    root, ctx = _root()
    return {
        name: (cmd, cmd.make_context(name, [], parent=ctx, resilient_parsing=True))
        for name in root.list_commands(ctx)
        if not (cmd := root.get_command(ctx, name)).hidden
    }


def _paragraphs(text: str | None) -> str:
    """A docstring's paragraphs as HTML, single newlines joined as --help joins them."""
    from vaecli.cli.app import reflow

    paragraphs = [p for p in (reflow(text) or "").split("\n\n") if p]
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def parameter_rows(cmd: Any, ctx: Any) -> list[dict[str, str]]:
    """One row per visible argument and option: names, value, help, extra (default, range, required)."""
    rows = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False):
            continue
        signature, text = record
        if param.param_type_name == "argument":
            name, _, value = signature.partition(" ")
            names = name.upper()
        else:
            match = NAMES.match(signature)
            assert match, f"cannot read the option names of {signature!r}"
            names, value = match.groups()
        help_text, extra = EXTRA.match(text or "").groups()  # type: ignore[union-attr]
        rows.append({"names": names, "value": value, "help": help_text.strip(), "extra": extra or ""})
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    cells = ["<table>", "<thead><tr><th>Option</th><th>Value</th><th>Description</th></tr></thead>", "<tbody>"]
    for row in rows:
        names = " ".join(n for n in re.split(r", | / ", row["names"]))
        extra = f"<br><small>{html.escape(row['extra'])}</small>" if row["extra"] else ""
        value = f"<code>{html.escape(row['value'])}</code>" if row["value"] else ""
        cells.append(
            f'<tr data-names="{html.escape(names)}"><td><code>{html.escape(row["names"])}</code></td>'
            f"<td>{value}</td><td>{html.escape(row['help'])}{extra}</td></tr>"
        )
    return "\n".join([*cells, "</tbody>", "</table>"])


def _usage(cmd: Any, ctx: Any) -> str:
    usage = " ".join([ctx.command_path, *cmd.collect_usage_pieces(ctx)])
    return f"```text\n{usage}\n```"


def options_block(name: str) -> str:
    """Usage and the options table of `vaecli NAME`, as Markdown with an HTML table."""
    commands = _commands()
    if name not in commands:
        raise ValueError(f"no command {name!r} in vaecli (it has {', '.join(commands)})")
    cmd, ctx = commands[name]
    return f"{_usage(cmd, ctx)}\n\n{_table(parameter_rows(cmd, ctx))}\n"


def reference_page(pages: Collection[str] = ()) -> str:
    """The whole CLI reference; a command links to its own page where `pages` has one."""
    root, ctx = _root()
    parts = [
        "# CLI reference",
        "",
        "Generated from the Typer app when the site is built, so it says what `vaecli COMMAND --help` says.",
        "",
        _paragraphs(root.help),
        "",
        _usage(root, ctx),
        "",
        _table(parameter_rows(root, ctx)),
        "",
    ]
    for name, (cmd, sub) in _commands().items():
        panel = getattr(cmd, "rich_help_panel", None)
        panel_note = f"<p><em>{html.escape(panel)}</em></p>\n" if isinstance(panel, str) else ""
        parts += [
            f"## vaecli {name} {{#{name}}}",
            "",
            panel_note + _paragraphs(cmd.help),
            "",
            _usage(cmd, sub),
            "",
            _table(parameter_rows(cmd, sub)),
            "",
            f"More: [the {name} page](../commands/{name}.md)." if f"commands/{name}.md" in pages else "",
            "",
        ]
    return "\n".join(parts)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    pages = {f.src_uri for f in files}
    files.append(File.generated(config, PAGE, content=reference_page(pages)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: options_block(m.group(1)), markdown)
