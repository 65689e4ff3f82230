"""Fast adversarial training: FGSM with a random start (Wong et al. 2020)."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")


@register
class FGSMAT(Technique):
    """Fast adversarial training: FGSM with a random start (Wong, Rice & Kolter, ICLR 2020,
    "Fast is better than free", locuslab/fast_adversarial).

        δ ~ U[−ε, ε];  δ ← clip_ε(δ + α·sign(∇_δ CE(f(x+δ), y)));  loss = CE(f(x+δ), y)

    Defaults from the official code: CIFAR-10 ε=8/255, α=10/255 (α = 1.25·ε); MNIST ε=0.3, α=0.375.
    Catastrophic overfitting — PGD accuracy collapsing while FGSM accuracy climbs — is watched each
    epoch by a PGD attack on a fixed training batch (``co_check_*`` in the history).

    Example::

        >>> cfg.arms["fgsm_at"] = {"technique": "fgsm_at", "hparams": {"eps": 0.1}}
    """

    name = "fgsm_at"
    summary = "FGSM with random start (fast AT), catastrophic-overfitting check each epoch"
    adversarial = True
    home_scenario = "clean"
    home_metric = "robust_acc"
    params = {
        "eps": Param(8 / 255, "L∞ radius in pixel units (MNIST 0.3)", low=1 / 255, high=0.3, log=True, ge=0),
        "step_ratio": Param(1.25, "step α as a multiple of ε (10/255 ÷ 8/255)", low=0.5, high=2.0, gt=0),
        "random_start": Param(True, "start from x + U[−ε, ε] (FGSM-RS)"),
        "bn_mode": Param("eval", "model mode while crafting the attack", choices=("eval", "train")),
        "co_check_steps": Param(10, "PGD steps of the per-epoch catastrophic-overfitting check (0: off)", ge=0),
        "co_check_size": Param(256, "training examples in the check batch", ge=1),
    }

    def loss(self, model, batch):
        hp = self.hp
        x_adv = attacks.fgsm(model, batch.x, batch.y, hp.eps, step=hp.step_ratio * hp.eps,
                             random_start=hp.random_start, bn_mode=hp.bn_mode)
        return F.cross_entropy(model(x_adv), batch.y)

    def epoch_end(self, model, epoch):
        hp = self.hp
        if hp.co_check_steps == 0 or self.ctx.train is None:
            return {}
        x, y = self.ctx.train.x[: hp.co_check_size], self.ctx.train.y[: hp.co_check_size]
        # the check must not shift the training RNG stream
        with attacks.fork_rng(x.device):
            torch.manual_seed(epoch)
            x_fgsm = attacks.fgsm(model, x, y, hp.eps, step=hp.step_ratio * hp.eps, random_start=True)
            x_pgd = attacks.pgd(model, x, y, hp.eps, steps=hp.co_check_steps)
        fgsm_acc = attacks.predict(model, x_fgsm).argmax(1).eq(y).float().mean().item()
        pgd_acc = attacks.predict(model, x_pgd).argmax(1).eq(y).float().mean().item()
        return {"co_check_fgsm_acc": fgsm_acc, "co_check_pgd_acc": pgd_acc}
