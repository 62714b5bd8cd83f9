"""MkDocs hook: the table of vaecli's public names, read from `vaecli._EXPORTS` and `_MODULES` at build time.

A line `<!-- vaecli-exports -->` becomes the table; each name is an autorefs link to
its mkdocstrings entry, so a strict build fails when a public name is not documented.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- vaecli-exports -->"
# the API page that documents each layer (mkdocs.yml's Python API section)
PAGES = {
    "vaecli.config": "config.md",
    "vaecli.options": "config.md",
    "vaecli.configfile": "config.md",
    "vaecli.choices": "config.md",
    "vaecli.errors": "config.md",
    "vaecli.atomic": "config.md",
    "vaecli.core": "core.md",
    "vaecli.engine": "engine.md",
    "vaecli.store": "store.md",
    "vaecli.studies": "studies.md",
    "vaecli.views": "views.md",
}


def _page(module: str) -> str:
    prefix = next(p for p in PAGES if module == p or module.startswith(p + "."))
    return PAGES[prefix]


def exports_table() -> str:
    import vaecli

    rows = ["| `from vaecli import ...` | defined in | documented on |", "|---|---|---|"]
    for name, module in vaecli._EXPORTS.items():
        rows.append(f"| [`{name}`][{module}.{name}] | `{module}` | [{_page(module)[:-3]}]({_page(module)}) |")
    rows += ["", "| module | is | documented on |", "|---|---|---|"]
    for name, module in vaecli._MODULES.items():
        rows.append(f"| [`vaecli.{name}`][{module}] | `{module}` | [{_page(module)[:-3]}]({_page(module)}) |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(MARKER, exports_table()) if MARKER in markdown else markdown
