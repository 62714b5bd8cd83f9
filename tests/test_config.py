import pytest

from vaecli.config import ModelConfig, TrainConfig, epochs_text
from vaecli.errors import ConfigError


def test_json_round_trip_and_digest():
    cfg = TrainConfig(model=ModelConfig(latent_dim=20, hidden_layers=(400,)), lam=5, epochs=3)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.digest() == cfg.digest()
    assert TrainConfig(lam=1).digest() == TrainConfig(lam=1.0).digest()
    assert TrainConfig(lam=2).digest() != TrainConfig(lam=1).digest()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lam": -1}, "`lam` must be at least 0"),
        ({"lam": float("nan")}, "`lam` must be a finite number"),
        ({"epochs": 0}, "`epochs` must be at least 1"),
        ({"batch_size": 0}, "`batch_size` must be at least 1"),
        ({"lr": 0}, "`lr` must be greater than 0"),
        ({"dataset": "cifar"}, "`dataset` must be one of"),
        ({"binarize": "yes"}, "`binarize` must be true or false"),
    ],
)
def test_bad_train_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "`latent_dim` must be at least 1"),
        ({"latent_dim": 2.5}, "`latent_dim` must be an integer"),
        ({"latent_dim": True}, "`latent_dim` must be an integer"),
        ({"hidden_layers": (512, 0)}, "`hidden_layers` must be at least 1"),
        ({"recon": "laplace"}, "`recon` must be one of"),
    ],
)
def test_bad_model_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"lam": 1, "colour": "red"}', "unknown keys: colour"),
        ('{"model": {"latent_dim": 2, "depth": 3}}', "unknown keys: depth"),
        ('{"model": {"hidden_layers": 5}}', "`hidden_layers` must be a list"),
        ('["a list"]', "must be a JSON object"),
    ],
)
def test_bad_json_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_json(text)


def test_reports_count_epochs_in_english():
    assert (epochs_text(1), epochs_text(20)) == ("1 epoch", "20 epochs")
    assert TrainConfig(capacity=5.0, capacity_epochs=1).describe_objective() == "elbo, capacity 5 nats over 1 epoch"
    assert TrainConfig(kl_warmup=2).describe_objective() == "elbo, KL warm-up 2 epochs"
