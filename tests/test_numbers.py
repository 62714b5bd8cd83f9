"""Number options refuse NaN, infinities and values below their minimum in one wording, alone or in a list."""

import math

import pytest
import typer

from tests.conftest import FAST_TRAIN_ARGS, invoke, one_line_error
from vaecli.cli.lists import number_problem, parse_floats


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_train_lam_says_one_thing(value, tiny_mnist):
    shown = f"{float(value):g}"
    result = invoke("train", *FAST_TRAIN_ARGS, "--lam", value, "--data-dir", tiny_mnist)
    one_line_error(result, f"--lam: must be a finite number ≥ 0, got {shown}", "vaecli train --help")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_ablate_lam_list_says_the_same(value, tiny_mnist):
    result = invoke("ablate", "--lam", "1", value, "--epochs", "1", "--device", "cpu", "--data-dir", tiny_mnist)
    one_line_error(result, f"--lam: must be a finite number ≥ 0, got {float(value):g}")


def test_train_lr_nan_is_one_line(tiny_mnist):
    one_line_error(
        invoke("train", *FAST_TRAIN_ARGS, "--lr", "nan", "--data-dir", tiny_mnist), "--lr", "finite number", code=2
    )


def test_lam_zero_is_allowed(tiny_mnist):
    assert invoke("train", *FAST_TRAIN_ARGS, "--lam", "0", "--data-dir", tiny_mnist, "--quiet").exit_code == 0


def test_number_problem():
    assert number_problem(0.0, 0.0) is None and number_problem(3.5) is None
    assert number_problem(math.nan, 0.0) == "must be a finite number ≥ 0, got nan"
    assert number_problem(math.inf) == "must be a finite number, got inf"
    assert number_problem(-2.0, 0.0) == "must be a finite number ≥ 0, got -2"


def test_parse_floats_refuses_non_finite_values():
    assert parse_floats("-3,3", "--range") == (-3.0, 3.0)
    with pytest.raises(typer.BadParameter, match="finite number, got inf"):
        parse_floats("-3,inf", "--range")
