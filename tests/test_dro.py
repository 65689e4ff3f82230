"""Group DRO, CVaR DRO and χ² DRO against values computed by hand on small batches, hyperparameter
validation; and the DRO study's home finding end to end."""

import math

import pytest
import torch
import torch.nn.functional as F

from studylib import Study, load_study, train
from studylib.config import ConfigError
from studylib.data import Batch, make_data
from studylib.techniques import RunContext, get_technique
from studylib.techniques.cvar_dro import chi_square_weights, cvar_weights
from studylib.techniques.group_dro import group_mean_losses

GROUP_COUNTS = [400, 25, 16, 100]


def make(name, group_counts=GROUP_COUNTS, **hp):
    cls = get_technique(name)
    g = torch.tensor(group_counts)
    ctx = RunContext(n_train=int(g.sum()), num_classes=2, n_groups=len(group_counts), epochs=3,
                     device=torch.device("cpu"), class_counts=torch.tensor([1, 1]), group_counts=g)
    return cls(cls.hparams_model()(**hp), ctx)


# a batch of 5 examples; group 2 is absent
LOSSES = torch.tensor([0.2, 0.6, 1.5, 0.1, 0.3])
GROUPS = torch.tensor([0, 0, 1, 3, 3])
GROUP_LOSS = [0.4, 1.5, 0.0, 0.2]  # means per group by hand; the absent group contributes 0


def test_group_mean_losses_by_hand():
    loss, count = group_mean_losses(LOSSES, GROUPS, 4)
    assert loss.tolist() == pytest.approx(GROUP_LOSS)
    assert count.tolist() == [2, 1, 0, 2]


def test_group_dro_q_update_and_loss_by_hand():
    eta = 0.5
    t = make("group_dro", eta=eta)
    loss = t.robust_loss(LOSSES, GROUPS)
    q = [0.25 * math.exp(eta * l) for l in GROUP_LOSS]
    q = [v / sum(q) for v in q]
    assert t.q.tolist() == pytest.approx(q, rel=1e-6)
    assert float(loss) == pytest.approx(sum(qg * lg for qg, lg in zip(q, GROUP_LOSS)), rel=1e-6)
    # a second batch starts from the updated q (online mirror ascent, q is state)
    loss2 = t.robust_loss(LOSSES, GROUPS)
    q2 = [qg * math.exp(eta * l) for qg, l in zip(q, GROUP_LOSS)]
    q2 = [v / sum(q2) for v in q2]
    assert t.q.tolist() == pytest.approx(q2, rel=1e-6)
    assert float(loss2) == pytest.approx(sum(a * b for a, b in zip(q2, GROUP_LOSS)), rel=1e-6)
    # the absent group lost weight relative to every present group with a positive loss
    assert t.q[2] < t.q[0] and t.q[2] < 0.25


def test_group_dro_generalization_adjustment_by_hand():
    eta, C = 0.1, 2.0
    t = make("group_dro", eta=eta, adjustment=C)
    loss = t.robust_loss(LOSSES, GROUPS)
    adjusted = [lg + C / math.sqrt(n) for lg, n in zip(GROUP_LOSS, GROUP_COUNTS)]  # 0.5, 1.9, 0.5, 0.4
    assert adjusted == pytest.approx([0.5, 1.9, 0.5, 0.4])
    q = [0.25 * math.exp(eta * a) for a in adjusted]
    q = [v / sum(q) for v in q]
    assert t.q.tolist() == pytest.approx(q, rel=1e-6)
    assert float(loss) == pytest.approx(sum(a * b for a, b in zip(q, adjusted)), rel=1e-6)
    # the absent small group gets its adjustment alone (2/√16 = 0.5), as much as the large group 0's
    # mean loss plus adjustment (0.4 + 2/√400): their weights stay equal
    assert t.q[2] == pytest.approx(t.q[0])


def test_group_dro_with_eta_zero_is_group_balanced_reweighting():
    t = make("group_dro", eta=0.0)
    loss = t.robust_loss(LOSSES, GROUPS)
    assert t.q.tolist() == [0.25] * 4
    assert float(loss) == pytest.approx(sum(GROUP_LOSS) / 4)  # every group weighs the same


def test_group_dro_gradient_is_the_q_weighted_group_losses():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 1, 0, 1])
    model = torch.nn.Linear(3, 2)
    t = make("group_dro", eta=0.01)
    loss = t.loss(model, Batch(x, y, torch.arange(5), GROUPS))
    ce = F.cross_entropy(model(x), y, reduction="none")
    gl = torch.stack([ce[GROUPS == k].mean() if (GROUPS == k).any() else ce.sum() * 0 for k in range(4)])
    assert torch.allclose(loss, t.q @ gl, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, model.weight)
    (by_hand,) = torch.autograd.grad(t.q @ gl, model.weight)
    assert torch.allclose(grad, by_hand, atol=1e-6)


def test_group_dro_logs_q_per_epoch_and_reports_it():
    t = make("group_dro", eta=0.5)
    t.epoch_start(1)
    t.robust_loss(LOSSES, GROUPS)
    t.robust_loss(LOSSES, GROUPS)
    row = t.epoch_end(None, 1)
    assert [row[f"q_{g}"] for g in range(4)] == pytest.approx(t.q.tolist())
    assert sum(row[f"q_mean_{g}"] for g in range(4)) == pytest.approx(1.0)
    assert t.diagnostics()["q"] == pytest.approx(t.q.tolist())


def test_group_dro_trains_on_group_balanced_batches_unless_the_arm_says_otherwise(monkeypatch):
    """Every official Group DRO run samples group-balanced batches (--reweight_groups); the resolved
    run config names the sampler, an arm can switch it, and the loop draws each group ≈ ¼ of the time
    (the spurious digits split holds ≈2–3% of each minority group)."""
    cfg = load_study("dro", "smoke", {"train.epochs": 2, "arms.group_dro_nb": {
        "technique": "group_dro", "train": {"sampler": "uniform"}}})
    assert cfg.train.sampler is None  # the study leaves it to each technique
    samplers = {arm: cfg.run_config(arm, 0).train.sampler for arm in cfg.arms}
    assert samplers["group_dro"] == samplers["group_dro_es"] == "group_balanced"
    assert samplers["erm"] == samplers["cvar"] == samplers["group_dro_nb"] == "uniform"
    assert cfg.run_config("group_dro", 0).hash() != cfg.run_config("group_dro_nb", 0).hash()
    with pytest.raises(ConfigError, match="train.sampler"):
        load_study("dro", "smoke", {"arms.erm.train.sampler": "balanced"})

    drawn = []
    batches = train.batches

    def recording(*args, **kwargs):
        for b in batches(*args, **kwargs):
            drawn.append(b.group)
            yield b

    monkeypatch.setattr(train, "batches", recording)
    data = make_data(cfg.data, 0)
    shares = {}
    for arm in ("group_dro", "group_dro_nb"):
        drawn.clear()
        result = train.fit(cfg.run_config(arm, 0), data, progress=False)
        assert result.sampler == cfg.run_config(arm, 0).train.sampler
        shares[arm] = torch.bincount(torch.cat(drawn), minlength=4).float() / len(torch.cat(drawn))
        assert len(drawn) == 2 * -(-len(data.train) // 64)  # as many batches as plain epochs
    assert torch.allclose(shares["group_dro"], torch.full((4,), 0.25), atol=0.05), shares
    assert shares["group_dro_nb"][[1, 2]].max() < 0.04, shares


def test_cvar_by_hand():
    v = torch.tensor([0.1, 0.5, 2.0, 0.3, 1.2])
    # α·m = 2.5: the top two losses with weight 1/2.5, half of the third (remainder 1 − 2/2.5 = 0.2)
    assert float(cvar_weights(v, 0.5) @ v) == pytest.approx((2.0 + 1.2 + 0.5 * 0.5) / 2.5)
    assert cvar_weights(v, 0.5).tolist() == pytest.approx([0, 0.2, 0.4, 0, 0.4])
    assert float(cvar_weights(v, 0.2) @ v) == pytest.approx(2.0)  # α·m = 1: the largest loss
    assert float(cvar_weights(v, 1.0) @ v) == pytest.approx(float(v.mean()))  # α = 1: ERM
    assert float(cvar_weights(v, 0.1) @ v) == pytest.approx(2.0)  # α·m < 1: still the largest


def test_cvar_dro_loss_on_a_model():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)
    model = torch.nn.Linear(3, 2)
    ce = F.cross_entropy(model(x), y, reduction="none")
    top = ce.sort(descending=True).values
    loss = make("cvar_dro", alpha=0.25).loss(model, Batch(x, y, torch.arange(8), y))
    assert loss.item() == pytest.approx(top[:2].mean().item(), rel=1e-6)


def test_chi_square_weights_make_the_constraint_tight():
    v = torch.tensor([0.1, 0.5, 2.0, 0.3, 1.2, 0.05, 0.7, 0.2])
    m = len(v)
    for rho in (0.1, 0.5, 1.0):
        p = chi_square_weights(v, rho)
        assert float(p.sum()) == pytest.approx(1.0)
        assert float(0.5 * ((m * p - 1) ** 2).mean()) == pytest.approx(rho, rel=1e-4)
        # p_i ∝ (ℓ_i − η)₊: solve η from the two largest losses, then check every other weight
        eta = (p[2] * v[4] - p[4] * v[2]) / (p[2] - p[4])
        expected = torch.relu(v - eta)
        assert torch.allclose(p, expected / expected.sum(), atol=1e-5)
        assert float(p @ v) > float(v.mean())  # the worst case is above the average
    assert chi_square_weights(torch.full((4,), 0.3), 1.0).tolist() == pytest.approx([0.25] * 4)
    assert float(make("chi2_dro", rho=0.0).robust_loss(v)) == pytest.approx(float(v.mean()))


def test_hyperparameters_are_validated():
    gd = get_technique("group_dro").hparams_model()
    assert gd().eta == 0.01 and gd().adjustment == 0.0  # official defaults
    with pytest.raises(Exception, match="eta"):
        gd(eta=-0.01)
    with pytest.raises(Exception, match="adjustment"):
        gd(adjustment=-1.0)
    cv = get_technique("cvar_dro").hparams_model()
    with pytest.raises(Exception, match="alpha"):
        cv(alpha=0.0)
    with pytest.raises(Exception, match="alpha"):
        cv(alpha=1.5)
    with pytest.raises(Exception, match="rho"):
        get_technique("chi2_dro").hparams_model()(rho=-0.1)


def test_group_dro_with_early_stopping_or_strong_l2_beats_erm_on_the_worst_group():
    """Sagawa et al. 2020: with early stopping or strong ℓ2 (calibrated to this scale), Group DRO
    (group-balanced batches, η = 0.5 chosen on validation) raises worst-group test accuracy, and ERM
    given the same regularisation does not catch up. Margins checked on design seeds 0–4 (smallest
    per-seed gains: early stopped +0.036 over ERM and +0.114 over early-stopped ERM; with ℓ2 +0.050
    over ERM with ℓ2). Group DRO with ℓ2 over plain ERM gains +0.12 on average but −0.008 on seed 4,
    so it is not asserted."""
    results = Study(load_study("dro", "smoke"), progress=False).run()
    wg = results.summary().worst_group_acc
    assert wg["group_dro_es"] > wg["erm"] + 0.03, wg
    assert wg["group_dro_es"] > wg["erm_es"] + 0.1, wg
    assert wg["group_dro_l2"] > wg["erm_l2"] + 0.03, wg
    assert not results.failed, results.failed
