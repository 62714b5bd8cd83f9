"""derive says which runs it checks on, and prefers the user's finished runs of its settings."""

from tests.conftest import invoke


def test_derive_uses_the_stores_longest_finished_runs_unless_epochs_is_given(tiny_mnist, tmp_path):
    where = ["--layers", "16", "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "store", "--device", "cpu"]
    for epochs in ("1", "3"):
        swept = invoke("ablate", "--lam", "1", "2", "--epochs", epochs, *where, "--iw-samples", "2")
        assert swept.exit_code == 0, swept.output
    found = " ".join(invoke("derive", "3", "--lams", "1", "2", *where).stdout.split())
    assert "3 epochs (the store's longest-trained finished runs" in found and "2 of 2 reused" in found
    asked = " ".join(invoke("derive", "3", "--lams", "1", "2", "--epochs", "2", *where).stdout.split())
    assert "2 epochs (as --epochs asks)" in asked and "0 of 2 reused" in asked
