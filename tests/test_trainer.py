import pytest
import torch

from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.device import resolve_device
from vaecli.engine.loop import train
from vaecli.engine.observer import Observer
from vaecli.engine.steps import build_model, step_noise
from vaecli.errors import ConfigError

SMALL_MODEL = ModelConfig(latent_dim=2, hidden_layers=(32, 16))


def test_history_has_one_record_per_epoch(tiny_mnist):
    result = train(
        TrainConfig(model=SMALL_MODEL, epochs=3, batch_size=16), load_dataset("mnist", tiny_mnist), device="cpu"
    )
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert all(r.test.kl >= 0 and r.seconds > 0 for r in result.history)
    assert result.device == "cpu" and not result.model.training


def test_training_lowers_the_test_loss(tiny_mnist):
    cfg = TrainConfig(model=SMALL_MODEL, epochs=30, batch_size=16, lr=3e-3)
    history = train(cfg, load_dataset("mnist", tiny_mnist), device="cpu").history
    assert history[-1].test.neg_elbo < 0.7 * history[0].test.neg_elbo


def test_same_seed_same_weights_bit_for_bit(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist)
    cfg = TrainConfig(model=SMALL_MODEL, epochs=2, batch_size=16, binarize=True)
    a, b = (train(cfg, ds, device="cpu").model.state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(TrainConfig(model=SMALL_MODEL, epochs=2, batch_size=16, binarize=True, seed=1), ds, device="cpu").model
    assert not torch.equal(a["mu.weight"], c.state_dict()["mu.weight"])


def test_training_leaves_the_global_rng_alone(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TrainConfig(model=SMALL_MODEL, epochs=1, batch_size=32), ds, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_observer_sees_every_batch_and_epoch(tiny_mnist):
    seen = []

    class Spy(Observer):
        def on_start(self, config, steps_per_epoch, device):
            seen.append(("start", steps_per_epoch))

        def on_batch(self, epoch, step):
            seen.append(("batch", epoch, step))

        def on_epoch(self, record):
            seen.append(("epoch", record.epoch))

    train(
        TrainConfig(model=SMALL_MODEL, epochs=2, batch_size=30),
        load_dataset("mnist", tiny_mnist),
        device="cpu",
        observer=Spy(),
    )
    # 64 images in batches of 30: 3 steps, the last one short
    assert seen[0] == ("start", 3)
    assert seen[1:5] == [("batch", 1, 1), ("batch", 1, 2), ("batch", 1, 3), ("epoch", 1)]
    assert len(seen) == 9


def test_image_shape_must_match(tiny_mnist):
    cfg = TrainConfig(model=ModelConfig(image_shape=(32, 32)), epochs=1)
    with pytest.raises(ConfigError, match="expects"):
        train(cfg, load_dataset("mnist", tiny_mnist), device="cpu")


def test_devices_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="`device` must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_binarization_draws_what_torch_bernoulli_draws():
    """The fast draw (u < x) gives torch.bernoulli's pixels and leaves the generator where it would: fits made
    before the change are reproduced bit for bit."""
    x = torch.rand(64, 784, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(model=ModelConfig(latent_dim=3), binarize=True)
    ours, theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    binary, eps = step_noise(x, config, ours)
    assert torch.equal(binary, torch.bernoulli(x, generator=theirs))
    assert torch.equal(eps, torch.randn(64, 3, generator=theirs))
    assert binary.dtype == x.dtype and set(binary.unique().tolist()) == {0.0, 1.0}


def test_models_built_in_threads_at_once_get_their_seeds_weights():
    """Fits in threads (a notebook's, say) each start from their own seed's weights: the global RNG that
    initialises them is taken in turn."""
    import threading

    configs = [TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(64, 32)), seed=s) for s in range(4)]
    expected = [build_model(c).state_dict() for c in configs]
    built: dict[int, list] = {i: [] for i in range(len(configs))}

    def build(i: int) -> None:
        for _ in range(15):
            built[i].append(build_model(configs[i]).state_dict())

    threads = [threading.Thread(target=build, args=(i,)) for i in range(len(configs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, states in built.items():
        assert all(torch.equal(state[k], expected[i][k]) for state in states for k in state)
