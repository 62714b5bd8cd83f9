"""The homework's PDF without TeX: an executed notebook as nbconvert's HTML, printed by headless Chromium.

    python examples/notebook_pdf.py examples/homework4.ipynb homework4.pdf

Needs nbconvert (`pip install 'vaecli[notebook]'`) and a Chromium (Debian: `apt-get install chromium`).
`jupyter nbconvert --to pdf` needs TeX, and `--to webpdf` a browser that Playwright downloads; this uses the
system's. The page is printed with code lines wrapped and figures fitted to its width, so nothing is cut off.
Formulas are typeset where MathJax can be loaded (online); offline they stay as LaTeX source.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# print styles added to nbconvert's page: long code lines wrap instead of running off the paper
PRINT_CSS = """<style>
@media print {
  pre, .jp-OutputArea-output pre, .highlight pre { white-space: pre-wrap !important; overflow-wrap: anywhere; }
  img { max-width: 100% !important; height: auto !important; }
}
</style>"""
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# headless, without a sandbox (containers have none) or the network calls that can hang it; time for MathJax
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-pdf-header-footer",
    "--virtual-time-budget=20000",
]


def notebook_html(notebook: Path) -> str:
    """The notebook as one self-contained HTML page (images inline), with PRINT_CSS."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter(embed_images=True).from_filename(str(notebook))
    return html.replace("</head>", PRINT_CSS + "\n</head>", 1)


def print_pdf(html: str, pdf: Path, browser: str) -> Path:
    """`html` printed to `pdf` by the Chromium at `browser`."""
    with tempfile.TemporaryDirectory(prefix="vaecli-pdf-") as scratch:
        page = Path(scratch) / "notebook.html"
        page.write_text(html, encoding="utf-8")
        target = pdf.resolve()
        done = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--print-to-pdf={target}", page.as_uri()], capture_output=True, text=True
        )
        if done.returncode != 0 or not target.is_file():
            raise SystemExit(f"error: {browser} could not print {pdf}: {done.stderr.strip().splitlines()[-1:]}")
    return pdf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="an executed .ipynb")
    parser.add_argument("pdf", type=Path, nargs="?", help="the PDF to write (default: the notebook's name, .pdf)")
    parser.add_argument(
        "--browser", help="Chromium's executable (default: chromium, chromium-browser or google-chrome)"
    )
    args = parser.parse_args(argv)
    browser = args.browser or next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        print(
            "error: no Chromium found; install one (Debian: apt-get install chromium) or give --browser",
            file=sys.stderr,
        )
        return 1
    if not args.notebook.is_file():
        print(f"error: {args.notebook}: no such notebook", file=sys.stderr)
        return 1
    pdf = print_pdf(notebook_html(args.notebook), args.pdf or args.notebook.with_suffix(".pdf"), browser)
    print(f"wrote {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
