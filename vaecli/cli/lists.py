"""Numbers and lists on the command line: `--layers 512 256` as the homework writes lists, and one wording
for a number that is out of range, whichever option it is."""

import math
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def join_number_lists(args: list[str], names: tuple[str, ...], words: tuple[str, ...] = ()) -> list[str]:
    """['--layers', '512', '256'] -> ['--layers', '512,256'] for the options in `names`; for an option in `words`
    (which wins over `names`), the values that are not options: ['--objective', 'elbo', 'iwae']."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        joined.append(args[i])
        i += 1
        if joined[-1] in names or joined[-1] in words:
            end = i
            value = (lambda arg: not arg.startswith("-")) if joined[-1] in words else _is_number
            while end < len(args) and value(args[end]):
                end += 1
            if end > i:
                joined.append(",".join(args[i:end]))
                i = end
    return joined


def number_lists(*names: str, words: tuple[str, ...] = ()) -> type[TyperCommand]:
    """A command class that reads `--opt 1 2 3` as `--opt 1,2,3` for the options `names` (and `--opt a b` as
    `--opt a,b` for those in `words`).

    The homework writes lists this way; a plain Typer list option would need the
    flag before every value. Declare such an option as `str` and parse it with
    parse_ints / parse_floats.
    """

    class NumberListCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            check_lists(args, names, words, self.params)
            return super().parse_args(ctx, join_number_lists(args, names, words))

    return NumberListCommand


def _is_value(arg: str) -> bool:
    return not arg.startswith("-") or _is_number(arg)


def check_lists(args: list[str], names: tuple[str, ...], words: tuple[str, ...], params: list[Any]) -> None:
    """Refuse a list option given twice (`--hidden 2 --hidden 10` would keep one list) and, where the command
    takes no arguments of its own, a value of a number list that is no number (`--hidden 2 x 10`)."""
    option_of = {opt: p.name for p in params for opt in getattr(p, "opts", []) if opt.startswith("-")}
    positional = any(getattr(p, "param_type_name", "") == "argument" for p in params)
    seen: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg == "--":
            return
        if arg not in names and arg not in words:
            continue
        name = option_of.get(arg, arg)
        if name in seen:
            raise typer.BadParameter(f"given twice: give all its values after one {arg}", param_hint=arg)
        seen[name] = arg
        if arg in words or positional:
            continue
        end = i + 1
        while end < len(args) and _is_value(args[end]):
            end += 1
        bad = [value for value in args[i + 1 : end] if not all(map(_is_number, filter(None, value.split(","))))]
        if bad:
            raise typer.BadParameter(f"expected numbers, got {bad[0]!r}", param_hint=arg)


def number_problem(value: float, minimum: float = -math.inf, above: bool = False) -> str | None:
    """What is wrong with `value` for a number option with this `minimum` (excluded when `above`), or None:
    one wording for all.

    NaN passes a plain `value < minimum` check (and click's min=), so finiteness is checked first.
    """
    if math.isfinite(value) and (value > minimum if above else value >= minimum):
        return None
    bound = f" {'>' if above else '≥'} {minimum:g}" if math.isfinite(minimum) else ""
    return f"must be a finite number{bound}, got {value:g}"


def at_least(minimum: float, above: bool = False) -> Callable[[typer.CallbackParam, float], float]:
    """A click callback refusing NaN, infinities and values below `minimum` (or at it, when `above`) with
    number_problem's line.

    None, an optional option not given, passes.
    """

    def check(param: typer.CallbackParam, value: float) -> float:
        if value is None:
            return value
        problem = number_problem(value, minimum, above)
        if problem:
            raise typer.BadParameter(problem, param_hint=param.opts[0])
        return value

    return check


def _parse_numbers(text: str, option: str, kind: type, minimum: float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        noun = "whole numbers" if kind is int else "numbers"
        raise typer.BadParameter(f"expected {noun}, got {text!r}", param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one number", param_hint=option)
    problems = [number_problem(v, minimum) for v in values] if kind is float else []
    problem = next(filter(None, problems), None)
    if problem:
        raise typer.BadParameter(problem, param_hint=option)
    if min(values) < minimum:
        raise typer.BadParameter(f"every value must be at least {minimum:g}, got {min(values):g}", param_hint=option)
    return values


def parse_ints(text: str, option: str, minimum: int = 1) -> tuple[int, ...]:
    """'512,256' -> (512, 256), each at least `minimum`."""
    return _parse_numbers(text, option, int, minimum)


def parse_floats(text: str, option: str, minimum: float = float("-inf")) -> tuple[float, ...]:
    """'1,5,10' -> (1.0, 5.0, 10.0), each at least `minimum`."""
    return _parse_numbers(text, option, float, minimum)
