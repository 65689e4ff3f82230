"""TRADES: the clean/robust trade-off (Zhang et al. 2019)."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")


@register
class TRADES(Technique):
    """TRADES (Zhang et al., ICML 2019; yaodongyu/TRADES).

        loss = CE(f(x), y) + β · (1/n) Σ_i KL( f(x_i) ‖ f(x'_i) ),
        x' = argmax_{‖x'−x‖∞ ≤ ε} KL( f(x) ‖ f(x') ), found by k sign-ascent steps from x + 0.001·N(0, I).

    Defaults from the official code (CIFAR-10): β=6, ε=0.031, 10 steps of 0.007; MNIST: ε=0.3,
    40 steps of 0.01. Here the step is ``step_ratio·ε`` (0.007/0.031 ≈ 0.226).

    Example::

        >>> cfg.arms["trades"] = {"technique": "trades", "hparams": {"eps": 0.1, "beta": 6.0}}
    """

    name = "trades"
    summary = "TRADES: CE + β·KL(f(x) ‖ f(x')) with x' maximising the KL"
    adversarial = True
    home_scenario = "clean"
    home_metric = "robust_acc"
    params = {
        "eps": Param(0.031, "L∞ radius in pixel units (MNIST 0.3)", low=1 / 255, high=0.3, log=True, ge=0),
        "beta": Param(6.0, "weight of the robust KL term (1/λ in the paper)", low=0.5, high=12.0, log=True, ge=0),
        "steps": Param(10, "inner maximisation steps (MNIST 40)", low=2, high=40, ge=1),
        "step_ratio": Param(0.007 / 0.031, "step as a multiple of ε", low=0.05, high=0.5, gt=0),
        "bn_mode": Param("eval", "model mode while crafting the attack", choices=("eval", "train")),
    }

    def loss(self, model, batch):
        hp = self.hp
        x_adv = attacks.trades_adversary(model, batch.x, hp.eps, steps=hp.steps,
                                         step=hp.step_ratio * hp.eps, bn_mode=hp.bn_mode)
        logits = model(batch.x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits, batch.y)
        # batchmean KL(f(x) ‖ f(x')) as in the official code (sum / batch size)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        return natural + hp.beta * robust
