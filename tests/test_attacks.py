"""Attacks: ε-ball and range, mode restored, PGD at ε=0 is clean accuracy, robust accuracy does not
rise with ε, the pyautoattack attacks are at least as strong as PGD-20, the worst case is below
every attack, the full profile's AutoAttack runs, and a 2-class task gets an honest attack set."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from studylib import attacks, robust
from studylib.config import DataConfig, EvalConfig, ModelConfig, load_study
from studylib.data import make_data
from studylib.models import build_model
from studylib.robust import attack_plan, masking_flags, robust_accuracy, robust_evaluation

FAST = {"pgd_steps": 20, "apgd_steps": 20, "apgd_targets": 3}  # APGD budgets kept small for speed


def _train(model, x, y, epochs):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained briefly on digits with batch norm and dropout (modes matter)."""
    torch.manual_seed(0)
    d = make_data(DataConfig(), 0)
    model = build_model(ModelConfig(batchnorm=True, dropout=0.2), d.input_shape, 10, d.mean, d.std)
    return _train(model, d.train.x, d.train.y, 3), d.test.x[:200], d.test.y[:200]


def acc(model, x, y):
    return attacks.predict(model, x).argmax(1).eq(y).float().mean().item()


ALL = [attacks.fgsm, attacks.pgd,
       partial(robust.apgd, seed=0, cfg=EvalConfig(**FAST)),
       partial(robust.apgd_t, seed=0, cfg=EvalConfig(**FAST), targets=3),
       partial(robust.square, seed=0, queries=50)]


@pytest.mark.parametrize("attack", ALL, ids=["fgsm", "pgd", "apgd", "apgd_t", "square"])
def test_inside_the_ball_and_unit_range(trained, attack):
    model, x, y = trained
    x_adv = attack(model, x[:64], y[:64], 0.1)
    assert x_adv.shape == x[:64].shape
    assert (x_adv - x[:64]).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_at_zero_eps_is_clean_accuracy(trained):
    model, x, y = trained
    assert acc(model, attacks.pgd(model, x, y, 0.0), y) == acc(model, x, y)
    rows = robust_accuracy(model, x, y, EvalConfig(eps=[0.0], main_eps=0.0, attacks=["fgsm", "pgd", "apgd"]), 10)
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


def test_apgd_ce_and_apgd_t_are_at_least_as_strong_as_pgd20(trained):
    """Run alone (no cheap attack before them), the strong rows are the attacks' own accuracy."""
    model, x, y = trained
    x, y = x[:100], y[:100]
    clean = acc(model, x, y)
    by = {}
    for name in ("pgd", "apgd", "apgd_t"):
        cfg = EvalConfig(eps=[0.05], main_eps=0.05, attacks=[name], **FAST)
        by[name] = next(r for r in robust_accuracy(model, x, y, cfg, 10) if r["attack"] == name)
    assert by["apgd"]["scope"] == "unbroken" and by["apgd"]["ran_on"] == round(clean * len(y))
    for name in ("apgd", "apgd_t"):
        assert by[name]["acc"] <= by["pgd"]["acc"] + 0.02, by
        assert by[name]["acc"] <= clean
    assert by["pgd"]["acc"] < clean - 0.1  # the attacks bite at this ε


def test_worst_case_is_below_every_attack_and_strong_attacks_run_only_where_asked(trained):
    model, x, y = trained
    x, y = x[:100], y[:100]
    cfg = EvalConfig(eps=[0.0, 0.05, 0.1], main_eps=0.05, attacks=["fgsm", "pgd", "apgd", "apgd_t"],
                     strong_eps="main", **FAST)
    result = robust_evaluation(model, x, y, cfg, 10, seed=3)
    rows = result.curve
    assert {r["eps"] for r in rows if r["attack"] in ("apgd", "apgd_t")} == {0.05}
    assert {r["eps"] for r in rows if r["attack"] in ("fgsm", "pgd")} == {0.0, 0.05, 0.1}
    for eps in (0.0, 0.05, 0.1):
        here = [r for r in rows if r["eps"] == eps]
        worst = next(r["acc"] for r in here if r["attack"] == "worst")
        assert all(worst <= r["acc"] + 1e-9 for r in here)
    at = {r["attack"]: r for r in rows if r["eps"] == 0.05}
    n = len(y)
    # the strong attacks ran on what FGSM and PGD left, and the counts add up to the worst case
    standalone_robust = round(min(at["fgsm"]["acc"], at["pgd"]["acc"]) * n)
    assert at["apgd"]["ran_on"] <= standalone_robust
    assert at["apgd_t"]["ran_on"] == at["apgd"]["ran_on"] - at["apgd"]["broke"]
    assert round(at["worst"]["acc"] * n) == at["apgd_t"]["ran_on"] - at["apgd_t"]["broke"]
    # nested balls: what broke at 0.05 stays broken at 0.1
    assert next(r["acc"] for r in rows if r["eps"] == 0.1 and r["attack"] == "worst") <= at["worst"]["acc"]
    assert result.attacks["run"] == ["fgsm", "pgd", "apgd", "apgd_t"] and result.attacks["strong_eps"] == [0.05]
    # deterministic: the run's seed fixes every attack
    assert robust_evaluation(model, x, y, cfg, 10, seed=3).curve == rows


def test_evaluation_restores_mode_parameters_and_batchnorm_statistics(trained):
    model, x, y = trained
    model.train()
    model.zero_grad(set_to_none=True)
    stats = [b.clone() for b in model.buffers()]
    attacks.pgd(model, x, y, 0.1, steps=3)
    robust_evaluation(model, x[:32], y[:32], EvalConfig(eps=[0.1], attacks=["pgd", "apgd"], **FAST), 10)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()


def test_restarts_keep_the_per_example_worst_case(trained):
    model, x, y = trained
    torch.manual_seed(0)
    one = acc(model, attacks.pgd(model, x, y, 0.05, steps=5, restarts=1), y)
    torch.manual_seed(0)
    three = acc(model, attacks.pgd(model, x, y, 0.05, steps=5, restarts=3), y)
    assert three <= one


def test_masking_flags_catch_rising_accuracy_and_black_box_attacks_winning():
    curve = [{"eps": 0.0, "attack": "pgd", "acc": 0.9}, {"eps": 0.1, "attack": "pgd", "acc": 0.95},
             {"eps": 0.1, "attack": "square", "acc": 0.5}]
    flags = masking_flags(curve)
    assert any("pgd accuracy rises" in f for f in flags) and any("black-box square" in f for f in flags)
    unbroken = [{"eps": 0.1, "attack": "pgd", "acc": 0.6, "scope": "standalone", "n": 100},
                {"eps": 0.1, "attack": "autoattack:square", "acc": 0.5, "scope": "unbroken", "n": 100,
                 "ran_on": 60, "broke": 10, "black_box": True}]
    assert any("breaks 10 of 100" in f for f in masking_flags(unbroken))
    unbroken[1]["broke"] = 1
    assert masking_flags(unbroken) == []


@pytest.fixture(scope="module")
def mlp():
    """A small MLP on digits, 10 classes (cheaper per query than the CNN: AutoAttack's FAB-T and
    Square run their full budgets on the examples nothing breaks)."""
    torch.manual_seed(0)
    d = make_data(DataConfig(), 0)
    model = build_model(ModelConfig(arch="mlp", width=64), d.input_shape, 10, d.mean, d.std)
    return _train(model, d.train.x, d.train.y, 5), d.test.x[:8], d.test.y[:8]


def test_the_full_profile_runs_the_standard_autoattack(mlp):
    model, x, y = mlp
    full = load_study("adversarial", "full").eval
    assert full.attacks == ["fgsm", "pgd", "autoattack"] and full.strong_eps == "all"
    cfg = full.model_copy(update={"eps": [0.15], "main_eps": 0.15, "pgd_steps": 2, "pgd_restarts": 1})
    result = robust_evaluation(model, x, y, cfg, 10)
    assert result.attacks["run"] == ["fgsm", "pgd", "autoattack", "autoattack:apgd-ce", "autoattack:apgd-t",
                                     "autoattack:fab-t", "autoattack:square"]
    assert "autoattack" not in result.attacks["notes"]  # 10 classes: the standard version as it is
    at = {r["attack"]: r for r in result.curve}
    assert at["autoattack:square"]["ran_on"] > 0  # every component ran on something
    assert at["worst"]["acc"] == at["autoattack"]["acc"] <= at["pgd"]["acc"]
    assert sum(at[f"autoattack:{c}"]["broke"] for c in robust.AUTOATTACK_COMPONENTS) == at["autoattack"]["broke"]
    assert at["autoattack:square"]["black_box"] and "black_box" not in at["autoattack:fab-t"]


@pytest.fixture(scope="module")
def two_class():
    """An MLP on digits' binary task (label ≥ 5), like the spurious scenario's target."""
    torch.manual_seed(0)
    d = make_data(DataConfig(), 0)
    model = build_model(ModelConfig(arch="mlp", width=64), d.input_shape, 2, d.mean, d.std)
    return _train(model, d.train.x, (d.train.y >= 5).long(), 5), d.test.x[:32], (d.test.y[:32] >= 5).long()


def test_a_two_class_task_gets_an_honest_recorded_attack_set(two_class):
    model, x, y = two_class
    plan, notes = attack_plan(EvalConfig(attacks=["fgsm", "pgd", "apgd", "apgd_t", "autoattack"], apgd_targets=3), 2)
    assert [s.name for s in plan] == ["fgsm", "pgd", "apgd", "apgd_x3", "autoattack"]
    assert [label for label, _ in plan[-1].stages] == ["apgd-ce", "fab-t", "square"]
    assert "4 classes" in notes["apgd_t"] and "custom" in notes["autoattack"]
    cfg = EvalConfig(eps=[0.0, 0.15], main_eps=0.15, attacks=["fgsm", "pgd", "apgd", "apgd_t", "autoattack"],
                     pgd_steps=2, apgd_steps=10, apgd_targets=3)
    result = robust_evaluation(model, x, y, cfg, 2)
    assert result.attacks["notes"] == notes and "apgd_x3" in result.attacks["run"]
    at = {r["attack"]: r for r in result.curve if r["eps"] == 0.15}
    assert at["apgd"]["ran_on"] > 0 and at["worst"]["acc"] <= min(at["pgd"]["acc"], at["fgsm"]["acc"])
    assert at["worst"]["acc"] < acc(model, x, y)
