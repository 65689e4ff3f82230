"""PGD adversarial training (Madry et al. 2018)."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")


@register
class PGDAT(Technique):
    """PGD adversarial training (Madry et al., ICLR 2018; MadryLab/mnist_challenge, cifar10_challenge).

        min_θ E[ max_{‖δ‖∞ ≤ ε} CE(f(x+δ), y) ],  the inner max by k steps of projected sign ascent
        from a uniform random start.

    Defaults from the official code: MNIST ε=0.3, 40 steps of 0.01; CIFAR-10 ε=8/255, 7 steps of 2/255.
    Here the step is ``step_ratio·ε`` (default 2.5/k, Madry's rule).

    Example::

        >>> cfg.arms["pgd_at"] = {"technique": "pgd_at", "hparams": {"eps": 0.1, "steps": 7}}
    """

    name = "pgd_at"
    summary = "PGD-k adversarial training (Madry et al.)"
    adversarial = True
    home_scenario = "clean"
    home_metric = "robust_acc"
    params = {
        "eps": Param(8 / 255, "L∞ radius in pixel units (MNIST 0.3)", low=1 / 255, high=0.3, log=True, ge=0),
        "steps": Param(7, "attack steps k (MNIST 40)", low=2, high=40, ge=1),
        "step_ratio": Param(None, "step as a multiple of ε; None: 2.5/steps", type=float | None, gt=0),
        "random_start": Param(True, "start from x + U[−ε, ε]"),
        "bn_mode": Param("eval", "model mode while crafting the attack", choices=("eval", "train")),
    }

    def loss(self, model, batch):
        hp = self.hp
        step = None if hp.step_ratio is None else hp.step_ratio * hp.eps
        x_adv = attacks.pgd(model, batch.x, batch.y, hp.eps, steps=hp.steps, step=step,
                            random_start=hp.random_start, bn_mode=hp.bn_mode)
        return F.cross_entropy(model(x_adv), batch.y)
