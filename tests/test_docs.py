"""The documentation site: built with `mkdocs build --strict`, served on 127.0.0.1, opened in headless Chromium.

The site is built once for the module (a few seconds). The checks that need no browser
(every page there, no resource from another host, the CLI reference equal to --help)
run without one; the browser tests are skipped, saying why, without playwright or
Chromium, and fail instead with VAECLI_REQUIRE_BROWSER=1 (as in CI). `-m "not docs"`
leaves the whole module out.
"""

import functools
import html
import http.server
import os
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, unavailable

pytestmark = pytest.mark.docs

# Debian's Chromium, as tests/test_explore_browser.py launches it (without these it keeps reaching for the network)
SCREENSHOT = Path("/tmp/vaecli-docs-screenshot.png")  # a stable copy, for a person to look at
PAGES = [  # a sample of the site: prose, figures, generated tables, mkdocstrings, the changelog snippet
    "index.html",
    "homework.html",
    "commands/grid.html",
    "reference/cli.html",
    "api/store.html",
    "formats.html",
    "changelog.html",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `mkdocs build --strict` writes it (any warning fails the build, and this test)."""
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        unavailable("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def server(site):
    """The built site over HTTP on 127.0.0.1, from a thread; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join()


@pytest.fixture
def open_page(browser, server):
    """Open a page of the site; every request is recorded, and any to another host is refused and fails the test."""
    pages = []

    def opener(path: str, width: int = 1280, height: int = 900):
        page = browser.new_page(viewport={"width": width, "height": height})
        requests, errors = [], []

        def route(r):
            requests.append(r.request.url)
            if urlsplit(r.request.url).hostname == "127.0.0.1":
                r.continue_()
            else:
                r.abort()

        page.route("**/*", route)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server + path, wait_until="networkidle")
        pages.append((page, requests, errors))
        return page

    yield opener
    for page, requests, errors in pages:
        page.close()
        outside = [url for url in requests if urlsplit(url).hostname != "127.0.0.1"]
        assert outside == [], outside
        assert errors == [], errors


class _Tags(HTMLParser):
    """(tag, attributes) of every start tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def _commands() -> list[str]:
    import typer

    from vaecli.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("vaecli", [], resilient_parsing=True)
    return [name for name in root.list_commands(ctx) if not root.get_command(ctx, name).hidden]


def test_every_page_is_built(site):
    expected = ["getting-started.html", "benchmarks.html", "architecture.html", *PAGES]
    expected += [f"commands/{name}.html" for name in _commands()]  # one page per command
    expected += [f"api/{name}.html" for name in ("index", "config", "core", "engine", "store", "studies", "views")]
    missing = [page for page in expected if not (site / page).is_file()]
    assert missing == []
    assert (site / "search" / "search_index.json").is_file()
    # the changelog is CHANGELOG.md itself, included when the site is built
    assert "Keep a Changelog" in (site / "changelog.html").read_text(encoding="utf-8")


def test_no_page_loads_anything_from_another_host(site):
    """Scripts, styles, images, fonts and frames come from the site itself (links to elsewhere are fine)."""
    loads = []
    for path in site.rglob("*.html"):
        for tag, attrs in _tags(path):
            urls = [attrs.get("src"), attrs.get("data-src"), attrs.get("poster")]
            if tag == "link":
                urls.append(attrs.get("href"))
            loads += [(path.relative_to(site), url) for url in urls if url and re.match(r"(https?:)?//", url)]
    assert loads == []
    for css in site.rglob("*.css"):  # no @import or font from a CDN either
        assert not re.search(r"url\((['\"]?)(https?:)?//", css.read_text(encoding="utf-8")), css


def test_every_public_name_is_documented(site):
    import vaecli

    ids = set()
    for page in (site / "api").glob("*.html"):
        ids |= {attrs["id"] for _, attrs in _tags(page) if attrs.get("id")}
    for name, module in vaecli._EXPORTS.items():
        assert f"{module}.{name}" in ids, name
    for module in vaecli._MODULES.values():
        assert module in ids, module


def _reference_sections(site: Path) -> dict[str, tuple[str, set[str]]]:
    """command (or '' for vaecli itself) -> (usage, option names) as reference/cli.html shows them."""
    page = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    article = page[page.index("<article") :]
    sections = {}
    for chunk in re.split(r'<h2 id="', article):
        name = "" if chunk.startswith("<article") else chunk.split('"', 1)[0]
        usage = re.search(r"<pre[^>]*>(.*?)</pre>", chunk, re.DOTALL)
        names = {n for group in re.findall(r'<tr data-names="([^"]*)"', chunk) for n in group.split()}
        text = html.unescape(re.sub(r"<[^>]+>", "", usage.group(1))).strip() if usage else ""
        sections[name] = (text, {n for n in names if n.startswith("-")})
    return sections


def _help(*args: str) -> tuple[str, set[str]]:
    """The usage line and the option names of `vaecli ARGS --help`, read from rich's panels."""
    from vaecli.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line).split("Usage:")[1].split()
    names = set()
    for line in result.output.splitlines():
        if line.startswith("│ -"):  # an option's row (continuation lines are indented)
            for token in line[2:].split():
                if not token.startswith("-"):
                    break
                names.add(token)
    return " ".join(["vaecli", *usage[1:]]), names


def test_cli_reference_says_what_help_says(site):
    sections = _reference_sections(site)
    commands = _commands()
    assert sorted(sections) == sorted(["", *commands])
    for name in ["", *commands]:
        usage, names = _help(*([name] if name else []))
        assert sections[name] == (usage, names), name
        if name:  # the command's own page has the same table
            page = (site / "commands" / f"{name}.html").read_text(encoding="utf-8")
            on_page = {n for group in re.findall(r'<tr data-names="([^"]*)"', page) for n in group.split()}
            assert {n for n in on_page if n.startswith("-")} == names, name


def test_pages_load_only_from_the_site(open_page):
    for path in PAGES:
        page = open_page(path)
        assert page.locator("h1").first.is_visible(), path


def test_figures_are_shown(open_page):
    page = open_page("commands/grid.html")
    image = page.locator("article img").first
    image.scroll_into_view_if_needed()
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())


def test_search_works_offline(open_page):
    """Material's search runs in the page (a web worker and the site's own index): no search service."""
    page = open_page("index.html")
    page.keyboard.press("/")  # Material's shortcut to the search box
    search = page.locator("input.md-search__input")
    assert search.evaluate("e => e === document.activeElement")
    search.press_sequentially("safetensors", delay=20)  # typed: the search listens to keys, not to a fill
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=15_000)
    links = page.locator(".md-search-result__link").evaluate_all("links => links.map(a => a.href)")
    assert any(urlsplit(link).path.endswith("/formats.html") for link in links), links
    assert "safetensors" in results.first.inner_text().lower()


def test_screenshot(open_page, tmp_path):
    from PIL import Image

    page = open_page("index.html", width=1280, height=1000)
    shot = tmp_path / "docs.png"
    page.screenshot(path=shot)
    SCREENSHOT.write_bytes(shot.read_bytes())
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (1000, 1280)
    assert image.std() > 20  # text, navigation and a figure, not a blank page
