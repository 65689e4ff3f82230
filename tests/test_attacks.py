"""Attacks: ε-ball and range, mode restored, PGD at ε=0 is clean accuracy, robust accuracy does not
rise with ε, and the ART attacks run."""

import pytest
import torch
import torch.nn.functional as F

from studylib import attacks
from studylib.config import DataConfig, EvalConfig, ModelConfig
from studylib.data import make_data
from studylib.evaluate import art_attack, masking_flags, robust_accuracy
from studylib.models import build_model


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained briefly on digits with batch norm and dropout (modes matter)."""
    torch.manual_seed(0)
    d = make_data(DataConfig(), 0)
    model = build_model(ModelConfig(batchnorm=True, dropout=0.2), d.input_shape, 10, d.mean, d.std)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(3):
        for i in range(0, len(d.train), 64):
            loss = F.cross_entropy(model(d.train.x[i:i + 64]), d.train.y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), d.test.x[:200], d.test.y[:200]


def acc(model, x, y):
    return attacks.predict(model, x).argmax(1).eq(y).float().mean().item()


@pytest.mark.parametrize("attack", [attacks.fgsm, attacks.pgd])
def test_inside_the_ball_and_unit_range(trained, attack):
    model, x, y = trained
    x_adv = attack(model, x, y, 0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_at_zero_eps_is_clean_accuracy(trained):
    model, x, y = trained
    assert acc(model, attacks.pgd(model, x, y, 0.0), y) == acc(model, x, y)
    rows = robust_accuracy(model, x, y, EvalConfig(eps=[0.0], main_eps=0.0), 10)
    assert all(r["acc"] == acc(model, x, y) for r in rows)


def test_robust_accuracy_does_not_rise_with_eps(trained):
    model, x, y = trained
    rows = robust_accuracy(model, x, y, EvalConfig(eps=[0.0, 0.02, 0.05, 0.1, 0.2]), 10)
    worst = [r["acc"] for r in rows if r["attack"] == "worst"]
    assert all(b <= a for a, b in zip(worst, worst[1:])) and worst[-1] < worst[0] - 0.3
    assert masking_flags(rows) == []
    pgd = {r["eps"]: r["acc"] for r in rows if r["attack"] == "pgd"}
    fgsm = {r["eps"]: r["acc"] for r in rows if r["attack"] == "fgsm"}
    assert pgd[0.1] <= fgsm[0.1]  # the multi-step attack is at least as strong


def test_attack_restores_mode_and_leaves_batchnorm_statistics(trained):
    model, x, y = trained
    model.train()
    stats = [b.clone() for b in model.buffers()]
    attacks.pgd(model, x, y, 0.1, steps=3)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    model.eval()


def test_restarts_keep_the_per_example_worst_case(trained):
    model, x, y = trained
    torch.manual_seed(0)
    one = acc(model, attacks.pgd(model, x, y, 0.05, steps=5, restarts=1), y)
    torch.manual_seed(0)
    three = acc(model, attacks.pgd(model, x, y, 0.05, steps=5, restarts=3), y)
    assert three <= one


def test_masking_flags_catch_rising_accuracy_and_weak_attacks_winning():
    curve = [{"eps": 0.0, "attack": "worst", "acc": 0.9}, {"eps": 0.1, "attack": "worst", "acc": 0.95},
             {"eps": 0.1, "attack": "pgd", "acc": 0.95}, {"eps": 0.1, "attack": "square", "acc": 0.5}]
    flags = masking_flags(curve)
    assert any("rises" in f for f in flags) and any("black-box square" in f for f in flags)


@pytest.mark.parametrize("name", ["apgd", "square"])
def test_art_attacks_run_and_hurt(trained, name):
    model, x, y = trained
    x, y = x[:64], y[:64]
    cfg = EvalConfig(pgd_steps=10, square_queries=100)
    x_adv = art_attack(name, model, x, y, 0.15, cfg, 10)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert acc(model, x_adv, y) < acc(model, x, y) - 0.2
    assert not model.training
