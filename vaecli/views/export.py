"""The derivations and their checks as Markdown (with LaTeX math) or as a LaTeX document.

Prose in `derive.PARTS` marks its bits of math with backticks, written in
Unicode (`p_θ(z|x)`); `math_latex` turns such a bit into LaTeX. Markdown math
is `$...$` and `$$...$$` as GitHub renders it; no backslash in it is followed
by punctuation, so no Markdown escape can change it.
"""

import re
from datetime import date
from pathlib import Path

from vaecli import __version__
from vaecli.studies.derive import PART_NUMBERS, PARTS, Part
from vaecli.studies.identities import Findings

# Unicode in the prose's math -> LaTeX
_MATH = {
    "φ": r"\phi ",
    "θ": r"\theta ",
    "λ": r"\lambda ",
    "ε": r"\epsilon ",
    "μ": r"\mu ",
    "σ": r"\sigma ",
    "π": r"\pi ",
    "β": r"\beta ",
    "α": r"\alpha ",
    "γ": r"\gamma ",
    "Π": r"\prod ",
    "²": "^2",
    "‖": r"\mathrel{\Vert} ",
    "|": r"\mid ",
    "≤": r"\le ",
    "≥": r"\ge ",
    "⇒": r"\Rightarrow ",
    "𝔼": r"\mathbb{E}",
    "𝓛": r"\mathcal{L}",
    "−": "-",
    "∼": r"\sim ",
    "⊙": r"\odot ",
    "·": r"\cdot ",
    "½": r"\tfrac{1}{2}",
    "∫": r"\int ",
    "Σ": r"\sum ",
    "×": r"\times ",
    "→": r"\to ",
    "…": r"\ldots ",
    "*": "^*",
}
_WORDS = {
    "log": r"\log",
    "max": r"\max",
    "KL": r"\mathrm{KL}",
    "diag": r"\operatorname{diag}",
    "argmin": r"\operatorname{argmin}",
    "argmax": r"\operatorname{argmax}",
}
# Unicode in plain text -> LaTeX, for the LaTeX document
_TEXT = {**{k: rf"\ensuremath{{{v.strip()}}}" for k, v in _MATH.items() if k not in "*|"}, "|": r"\ensuremath{\mid}"}
_TEXT.update({"’": "'", "—": "---", "–": "--", "≈": r"\ensuremath{\approx}", "∑": r"\ensuremath{\sum}"})
_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_SPECIAL["\\"] = r"\textbackslash{}"


def segments(text: str) -> list[tuple[bool, str]]:
    """Split prose into (is_math, piece) at its backticks."""
    pieces = text.split("`")
    if len(pieces) % 2 == 0:
        raise ValueError(f"unbalanced backticks in {text!r}")
    return [(i % 2 == 1, piece) for i, piece in enumerate(pieces) if piece]


def plain(text: str) -> str:
    """Prose with its backticks removed: how a terminal shows it."""
    return text.replace("`", "")


def math_latex(text: str) -> str:
    """A bit of Unicode math (`p_θ(z|x) = N(0, I)`) as LaTeX (`p_\\theta (z \\mid x) = \\mathcal{N}(0, I)`)."""
    text = re.sub(r"\bN(?=\()", r"\\mathcal{N}", text)
    text = re.sub(r"\b(" + "|".join(_WORDS) + r")\b", lambda m: _WORDS[m.group(1)], text)
    out = "".join(_MATH.get(c, c) for c in text)
    return re.sub(r" +", " ", out).strip()


def text_latex(text: str) -> str:
    """Plain text for a LaTeX document: specials escaped, Unicode mapped."""
    out = "".join(_SPECIAL.get(c) or _TEXT.get(c) or c for c in text)
    return out.replace("--", "-{}-")  # --recon, not an en dash


def prose_markdown(text: str) -> str:
    return "".join(f"${math_latex(p)}$" if is_math else p for is_math, p in segments(text))


def prose_latex(text: str) -> str:
    return "".join(f"${math_latex(p)}$" if is_math else text_latex(p) for is_math, p in segments(text))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _number(value: float) -> str:
    return f"{value:.6f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def _table_rows(findings: Findings, number: int) -> list[list[str]]:
    return [
        [
            c.name,
            f"{c.left_label} = {_number(c.left)}",
            f"{c.right_label} = {_number(c.right)}",
            f"{c.difference:+.2e}",
            c.needs,
            "PASS" if c.passed else "FAIL",
        ]
        for c in findings.checks
        if c.part == number
    ]


HEADER = ["check", "left", "right", "d = left − right", "needs", "result"]


def _md_cell(text: str) -> str:
    return text.replace("|", r"\|")


def markdown(parts: tuple[int, ...] = PART_NUMBERS, findings: Findings | None = None) -> str:
    """The derivations (and the checks' results, when given) as GitHub Markdown."""
    lines = [
        "# The VAE loss, derived and checked",
        "",
        f"Problem 1 of the homework, written by vaecli {__version__} (`vaecli derive`) on {date.today()}.",
        "",
    ]
    for number in parts:
        p = PARTS[number - 1]
        lines += [f"## Part {p.number}. {prose_markdown(p.title)}", "", prose_markdown(p.intro), ""]
        for i, step in enumerate(p.steps, 1):
            lines += [f"**Step {i}.** {prose_markdown(_capital(step.why))}:", ""]
            lines += ["$$", step.latex, "$$", ""]
        lines += [prose_markdown(p.outro), ""]
        if findings is not None:
            lines += _markdown_findings(findings, p)
    return "\n".join(lines).rstrip() + "\n"


def _markdown_findings(findings: Findings, p: Part) -> list[str]:
    lines = [f"### Part {p.number}, checked numerically", ""]
    lines += [f"- {_md_cell(line)}" for line in findings.context.get(p.number, [])]
    lines += [""] if findings.context.get(p.number) else []
    rows = _table_rows(findings, p.number)
    if rows:
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        lines += [""]
    for s in findings.skipped:
        if s.part == p.number:
            lines += [f"*Skipped: {_md_cell(s.name)}: {s.reason}.*", ""]
    if p.number == 3 and findings.sweep:
        lines += ["| λ | KL (nats) | reconstruction (nats) | run |", "|---|---|---|---|"]
        lines += [f"| {r.lam:g} | {r.kl:.3f} | {r.recon:.2f} | `{Path(r.run).name}` |" for r in findings.sweep]
        lines += [""]
    return lines


def latex(parts: tuple[int, ...] = PART_NUMBERS, findings: Findings | None = None) -> str:
    """The derivations (and the checks' results, when given) as a LaTeX document that compiles as is."""
    lines = [
        r"\documentclass[11pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{amsmath,amssymb}",
        r"\usepackage[margin=2.2cm]{geometry}",
        r"\usepackage{booktabs}",
        r"\begin{document}",
        r"\section*{The VAE loss, derived and checked}",
        rf"Problem 1 of the homework, written by vaecli {__version__} (\texttt{{vaecli derive}}) on {date.today()}.",
        "",
    ]
    for number in parts:
        p = PARTS[number - 1]
        lines += [rf"\subsection*{{Part {p.number}. {prose_latex(p.title)}}}", prose_latex(p.intro), ""]
        lines += [r"\begin{enumerate}"]
        for step in p.steps:
            lines += [rf"\item {prose_latex(_capital(step.why))}:", r"\[", step.latex, r"\]"]
        lines += [r"\end{enumerate}", prose_latex(p.outro), ""]
        if findings is not None:
            lines += _latex_findings(findings, p)
    lines += [r"\end{document}"]
    return "\n".join(lines) + "\n"


def _latex_findings(findings: Findings, p: Part) -> list[str]:
    lines = [rf"\subsubsection*{{Part {p.number}, checked numerically}}"]
    context = findings.context.get(p.number, [])
    if context:
        lines += [r"\begin{itemize}"] + [rf"\item {text_latex(line)}" for line in context] + [r"\end{itemize}"]
    checks = [c for c in findings.checks if c.part == p.number]
    if checks:
        lines += [
            r"{\small\begin{tabular}{@{}p{0.40\linewidth}rrrll@{}}",
            r"\toprule",
            r"check & left & right & $d$ = left $-$ right & needs & \\",
            r"\midrule",
        ]
        for c in checks:
            cells = [c.name, _number(c.left), _number(c.right), f"{c.difference:+.2e}", c.needs]
            lines += [" & ".join(text_latex(v) for v in cells) + (r" & PASS \\" if c.passed else r" & FAIL \\")]
        lines += [r"\bottomrule", r"\end{tabular}}", ""]
    for s in findings.skipped:
        if s.part == p.number:
            lines += [rf"\emph{{Skipped: {text_latex(s.name)}: {text_latex(s.reason)}.}}", ""]
    if p.number == 3 and findings.sweep:
        lines += [r"\begin{tabular}{@{}rrr@{}}", r"\toprule", r"$\lambda$ & KL (nats) & reconstruction (nats) \\"]
        lines += [r"\midrule"] + [rf"{r.lam:g} & {r.kl:.3f} & {r.recon:.2f} \\" for r in findings.sweep]
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    return lines
