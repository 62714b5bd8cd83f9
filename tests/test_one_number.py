"""One run, one test -ELBO: its training's last evaluation, `eval` and `ablate` give the same number."""

import json
from pathlib import Path

from tests.conftest import FAST_TRAIN_ARGS, invoke


def test_eval_and_ablate_give_the_trainings_own_test_elbo(tiny_mnist, tmp_path):
    where = ["--data-dir", tiny_mnist, "--iw-samples", "2"]
    ablated = invoke(
        "ablate", "--lam", "1", "4", *FAST_TRAIN_ARGS, *where, "--runs-dir", tmp_path / "s", "--out", tmp_path / "a"
    )
    assert ablated.exit_code == 0, ablated.output
    for member in json.loads((tmp_path / "a" / "metrics.json").read_text())["members"]:
        final = json.loads((Path(member["path"]) / "metrics.json").read_text())["history"][-1]
        assert (member["recon"], member["neg_elbo"]) == (final["test_recon"], final["test_neg_elbo"])
        scored = invoke("eval", member["path"], *where, "--json")
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout)["neg_elbo"] == final["test_neg_elbo"]
