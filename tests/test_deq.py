"""DEQ: the fixed point, the attack gradients, the technique wiring, and the home findings."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from studylib import Study, load_study
from studylib.config import ConfigError, DEQOptions, EvalConfig, ModelConfig
from studylib.data import Split
from studylib.models import build_model, count_parameters
from studylib.robust import robust_evaluation
from studylib.techniques import RunContext, get_technique


def contractive_deq(attack_grad="ift", **opts):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="deq", channels=(8, 8), width=16,
                                    deq=DEQOptions(attack_grad=attack_grad, max_iter=60, tol=1e-6, **opts)),
                        (1, 8, 8), 3)
    with torch.no_grad():
        model.conv.weight.mul_(0.1)  # a contraction (GroupNorm amplifies: 0.3 is not): IFT is exact
    return model.eval()


def test_eval_forward_reaches_the_fixed_point():
    model = contractive_deq()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        model(x)
        u = model.inject(model.normalize(x))
    assert model.last_stats["residual"].max() < 1e-4
    # the head sees z* = f(z*): recompute it by plain iteration and compare logits
    z = torch.zeros_like(u)
    with torch.no_grad():
        for _ in range(200):
            z = model.f(z, u)
        assert torch.allclose(model.head(z), model(x), atol=1e-4)


def _input_grad(model, x, y):
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return g.flatten()


def test_implicit_and_unrolled_gradients_agree_and_naive_differs():
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    grads = {}
    for mode in ("ift", "unrolled", "naive"):
        model = contractive_deq(mode, unroll_steps=60)
        grads[mode] = _input_grad(model, x, y)
    cos = F.cosine_similarity(grads["ift"], grads["unrolled"], dim=0)
    assert cos > 0.999
    assert F.cosine_similarity(grads["ift"], grads["naive"], dim=0) < cos
    assert (grads["ift"] - grads["naive"]).norm() > 1e-3 * grads["ift"].norm()


def test_explicit_counterpart_has_about_the_same_parameters():
    deq = build_model(ModelConfig(arch="deq", channels=(32, 32), width=64), (1, 8, 8), 10)
    cnn = build_model(ModelConfig(arch="cnn", channels=(32, 32), width=64), (1, 8, 8), 10)
    assert abs(count_parameters(deq) - count_parameters(cnn)) / count_parameters(cnn) < 0.01


def test_technique_sets_the_architecture_and_validates():
    cfg = load_study("deq", "smoke")
    run = cfg.run_config("deq_jac", 0)
    assert run.model.arch == "deq" and run.model.deq.max_iter == run.hparams["max_iter"]
    assert cfg.run_config("erm", 0).model.arch == "cnn"
    with pytest.raises(ConfigError, match="solver"):
        load_study("deq", "smoke", {"arms.deq.hparams.solver": "newton"})


def test_jacobian_regulariser_is_positive_and_differentiable():
    model = contractive_deq().train()
    model.jacobian_loss = True
    model(torch.rand(4, 1, 8, 8))
    assert model.last_jac_loss > 0
    model.last_jac_loss.backward()
    assert model.conv.weight.grad.abs().sum() > 0


def test_worst_case_covers_every_attack_gradient_and_square_on_the_same_examples():
    """The DEQ's extra attacks join the worst case: the headline is ≤ PGD with each gradient and
    ≤ Square; PGD with the model's own attack gradient is the scorecard's PGD, not run twice."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="deq", channels=(8, 8), width=16, deq=DEQOptions(max_iter=8, unroll_steps=8)),
                        (1, 8, 8), 3)
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every example clean-correct
    cls = get_technique("deq")
    deq = cls(cls.hparams_model()(square_queries=20, probe_examples=8),
              RunContext(n_train=1, num_classes=3, n_groups=1, epochs=1, device=torch.device("cpu"),
                         class_counts=torch.ones(3), group_counts=torch.ones(1)))
    cfg = EvalConfig(eps=[0.0, 0.05, 0.3], main_eps=0.3, attacks=["fgsm", "pgd"], strong_eps="main", pgd_steps=5)
    result = robust_evaluation(model, x, y, cfg, 3, extra=deq.eval_attacks(model, cfg))
    at = {r["attack"]: r for r in result.curve if r["eps"] == 0.3}
    assert {"pgd_ift", "pgd_unrolled", "pgd_naive", "square"} <= set(at) <= set(result.attacks["run"]) | {"worst"}
    assert at["pgd_ift"]["same_as"] == "pgd" and at["pgd_ift"]["acc"] == at["pgd"]["acc"]
    assert not any(r["attack"] == "pgd_naive" for r in result.curve if r["eps"] == 0.05)  # strong ε only
    for name in ("pgd_ift", "pgd_unrolled", "pgd_naive", "square", "fgsm"):
        assert at["worst"]["acc"] <= at[name]["acc"], (name, at)
    assert at["worst"]["acc"] < 1.0 and model.attack_grad == "ift"
    assert deq.score(model, SimpleNamespace(test=Split(x, y, y, torch.zeros_like(y))))["solver_nstep_pgd"] > 0


def test_home_findings_on_digits():
    """DEQ lands within a few points of the explicit network (Bai et al.), and a naive gradient
    through the solver overstates its robustness (Yang et al. 2022) while the implicit gradient
    does not."""
    results = Study(load_study("deq", "smoke"), progress=False).run()
    s = results.summary()
    assert abs(s.loc["deq", "clean_acc"] - s.loc["erm", "clean_acc"]) < 0.05, s.clean_acc
    for arm in ("deq", "deq_jac"):
        m = results.run(arm).metrics["metrics"]
        honest = min(m["pgd_acc_ift_grad"], m["pgd_acc_unrolled_grad"])
        assert m["pgd_acc_naive_grad"] > honest + 0.05, m
        # the headline is the worst case over every gradient and Square, on the same examples
        for key in ("pgd_acc_ift_grad", "pgd_acc_unrolled_grad", "pgd_acc_naive_grad", "square_acc"):
            assert m["robust_acc"] <= m[key], (key, m)
        assert {"pgd_unrolled", "pgd_naive", "square"} <= set(results.run(arm).metrics["attacks"]["run"])
        assert m["solver_residual_clean"] < 0.2  # 10 Anderson steps in the smoke profile
    assert results.run("deq_jac").metrics["metrics"]["solver_residual_clean"] <= \
        results.run("deq").metrics["metrics"]["solver_residual_clean"]
