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


def test_the_attack_gradient_is_implicit_whatever_the_training_gradient():
    """A cheap training gradient (phantom, 2 steps) does not weaken the attacks: their implicit
    gradient is the same as under implicit training (exact IFT at the fixed point)."""
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    exact = _input_grad(contractive_deq("ift", unroll_steps=60), x, y)
    phantom = contractive_deq("ift", unroll_steps=60, grad="phantom", phantom_steps=2)
    assert torch.allclose(_input_grad(phantom, x, y), exact, atol=1e-6)
    # while its training graph is the 2-step phantom one (another gradient)
    phantom.train()
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(phantom(xr), y), xr)
    assert (g.flatten() - exact).norm() > 1e-4 * exact.norm()


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


def test_unrolled_gradient_starts_at_the_detached_fixed_point():
    """The unrolled attack gradient iterates from the solver's z*, detached (Yang et al. 2022): its
    forward pass is the equilibrium's logits, one unrolled step is exactly the naive gradient (one
    step of f at z*), and many steps of a contraction converge to the implicit gradient."""
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        at_fixed_point = contractive_deq()(x)
    one = contractive_deq("unrolled", unroll_steps=1)
    assert torch.allclose(one(x), at_fixed_point, atol=1e-5)
    assert torch.allclose(_input_grad(one, x, y), _input_grad(contractive_deq("naive"), x, y), atol=1e-6)


def _tiny_deq_and_technique(num_classes=4):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="deq", channels=(8, 8), width=16, deq=DEQOptions(max_iter=8, unroll_steps=4)),
                        (1, 8, 8), num_classes)
    cls = get_technique("deq")
    deq = cls(cls.hparams_model()(probe_examples=8),
              RunContext(n_train=1, num_classes=num_classes, n_groups=1, epochs=1, device=torch.device("cpu"),
                         class_counts=torch.ones(num_classes), group_counts=torch.ones(1)))
    return model.eval(), deq


def test_worst_case_covers_every_gradient_then_apgd_t_then_square_on_the_survivors():
    """The DEQ's chain: PGD with each gradient on every clean-correct example, then APGD-CE and
    APGD-T (targeted DLR) through the stronger gradient on what PGD left, then Square on the final
    survivors; the headline is the per-example worst case, ≤ each of them, and the record says
    which attacks ran, on how many examples, and through which gradient."""
    model, deq = _tiny_deq_and_technique()
    x = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example clean-correct
    cfg = EvalConfig(eps=[0.0, 0.02, 0.05], main_eps=0.05, attacks=["fgsm", "pgd", "apgd", "apgd_t", "square"],
                     strong_eps="main", pgd_steps=3, apgd_steps=5, apgd_targets=2, square_queries=30)
    result = robust_evaluation(model, x, y, cfg, 4, extra=deq.eval_attacks(model, cfg))
    at = {r["attack"]: r for r in result.curve if r["eps"] == 0.05}
    assert list(at) == ["fgsm", "pgd", "pgd_unrolled", "pgd_naive", "apgd", "apgd_t", "square", "worst"]
    assert set(at) - {"worst"} <= set(result.attacks["run"])
    assert not any(r["attack"] == "pgd_naive" for r in result.curve if r["eps"] == 0.02)  # strong ε only
    # strong attacks: each on what the attacks before it left, the last (Square) on the final survivors
    pgd_left = 32 - max(at[a]["broke"] for a in ("fgsm", "pgd", "pgd_unrolled", "pgd_naive"))
    assert at["apgd"]["ran_on"] <= pgd_left
    assert at["apgd_t"]["ran_on"] == at["apgd"]["ran_on"] - at["apgd"]["broke"]
    assert at["square"]["ran_on"] == at["apgd_t"]["ran_on"] - at["apgd_t"]["broke"]
    assert at["square"]["black_box"] and at["square"]["acc"] == at["worst"]["acc"]
    assert at["apgd_t"]["scope"] == "unbroken" and "stronger" in result.attacks["notes"]["apgd_t"]
    for name in at:
        assert at["worst"]["acc"] <= at[name]["acc"], (name, at)
    assert result.robust[0.05].float().mean().item() == at["worst"]["acc"]
    assert at["worst"]["acc"] < 1.0 and model.attack_grad == "ift"
    # the strong attacks went through the gradient whose PGD broke more (ties: implicit)
    ift, unrolled = (deq._pgd_acc[(0.05, m)] for m in ("ift", "unrolled"))
    assert deq._strong_grad[0.05] == ("unrolled" if unrolled < ift else "ift")
    assert deq.score(model, SimpleNamespace(test=Split(x, y, y, torch.zeros_like(y))))["solver_nstep_pgd"] > 0


def test_strong_attacks_go_through_the_gradient_pgd_found_stronger():
    model, deq = _tiny_deq_and_technique()
    seen = []
    run = lambda m, x, y, eps, seed: seen.append(m.attack_grad) or x  # noqa: E731
    for ift, unrolled, expected in ((0.5, 0.4, "unrolled"), (0.4, 0.5, "ift"), (0.5, 0.5, "ift")):
        deq._pgd_acc, deq._strong_grad = {(0.1, "ift"): ift, (0.1, "unrolled"): unrolled}, {}
        deq._stronger(run, model, None, None, 0.1, 0)
        assert seen[-1] == expected and deq._strong_grad[0.1] == expected
    assert model.attack_grad == "ift"  # restored


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
        # the headline is the worst case over every gradient, APGD-T and Square, on the same examples
        for key in ("pgd_acc_ift_grad", "pgd_acc_unrolled_grad", "pgd_acc_naive_grad"):
            assert m["robust_acc"] <= m[key], (key, m)
        assert {"pgd_unrolled", "pgd_naive", "apgd_t", "square"} <= set(results.run(arm).metrics["attacks"]["run"])
        mask = results.run(arm).metrics["robust_examples"]
        assert mask["robust"].count("1") / len(mask["index"]) == pytest.approx(m["robust_acc"])
        assert m["solver_residual_clean"] < 0.2  # 8 fixed-point steps in the smoke profile, as in quick
    assert results.run("deq_jac").metrics["metrics"]["solver_residual_clean"] <= \
        results.run("deq").metrics["metrics"]["solver_residual_clean"]


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_the_matrix_pairs_the_deq_with_its_explicit_counterpart(profile):
    """The matrix's DEQ claim has an ERM twin of its own architecture (the cnn with the DEQ's
    channels), not the MLP ERM, and both are evaluated by the same eval config."""
    from studylib.claims import generic_knobs

    cfg = load_study("matrix", profile)
    runs = {a: cfg.run_config(a, cfg.seeds[0]).model_dump(mode="json") for a in cfg.arms}
    twins = [a for a, r in runs.items() if r["technique"] == "erm" and generic_knobs(r) == generic_knobs(runs["deq"])]
    assert twins == ["erm_cnn"]
    assert runs["erm_cnn"]["model"]["arch"] == "cnn" and runs["deq"]["model"]["arch"] == "deq"
    assert runs["erm_cnn"]["model"]["channels"] == runs["deq"]["model"]["channels"] == [32, 32]
    assert runs["erm_cnn"]["eval"] == runs["deq"]["eval"]
