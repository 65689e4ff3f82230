"""Early-learning regularization (Liu et al. 2020): keep the model near its own early predictions so
it does not memorise noisy labels."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


@register
class ELR(Technique):
    """ELR — Early-Learning Regularization (Liu, Niles-Weed, Razavian & Fernandez-Granda,
    NeurIPS 2020; shengliu66/ELR, ``ELR/model/loss.py``).

    For a batch of examples i with logits z_i, given (possibly noisy) labels y_i and dataset
    indices idx_i::

        p_i  = clamp(softmax(z_i), 1e-4, 1 − 1e-4)                       # (B, C)
        t_i ← β·t_i + (1 − β)·p̂_i,   p̂_i = p_i / Σ_j p_ij  (detached)     # per-example target
        loss = CE(z, y) + λ · (1/B) Σ_i log(1 − ⟨t_i, p_i⟩)

    The targets ``t`` (shape (n_train, C), zeros at the start as in the official code) are a
    running average of the model's own predictions. Early in training those predictions follow the
    clean signal, so pulling p_i towards t_i (the log term falls as ⟨t_i, p_i⟩ → 1) counters the
    gradient of the noisy labels that CE would otherwise memorise.

    Official defaults: CIFAR-10 symmetric noise β=0.7, λ=3; CIFAR-10 asymmetric β=0.9, λ=1;
    CIFAR-100 β=0.9, λ=7. Needs ``batch.idx`` (the index into the training split).

    Per epoch it logs ``elr_reg`` (mean regulariser) and ``elr_target_true_noisy`` (share of
    noisy-labelled training examples whose target's arg-max is the *true* class).

    Example::

        >>> cfg.arms["elr"] = {"technique": "elr", "hparams": {"beta": 0.7, "lam": 3.0}}
    """

    name = "elr"
    home_scenario = "label_noise"
    home_metric = "clean_acc"
    summary = "early-learning regularisation: CE + λ·mean log(1 − ⟨t_i, p_i⟩), t_i a running mean of p_i"
    params = {
        "beta": Param(0.7, "momentum of the per-example target (CIFAR-10 asym / CIFAR-100: 0.9)",
                      low=0.5, high=0.99, ge=0, lt=1),
        "lam": Param(3.0, "weight λ of the regulariser (CIFAR-10 asym: 1, CIFAR-100: 7)",
                     low=0.3, high=10.0, log=True, ge=0),
        "clamp": Param(1e-4, "probabilities are clamped to [clamp, 1 − clamp] (keeps log(1 − ⟨t, p⟩) finite)",
                       gt=0, lt=0.5),
    }

    state = ("target",)

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.target = torch.zeros(ctx.n_train, ctx.num_classes, device=ctx.device)
        self._reg_sum = 0.0
        self._reg_n = 0

    def update_target(self, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """t[idx] ← β·t[idx] + (1 − β)·p̂ with p̂ = p / Σ p, detached; returns the new t[idx]."""
        beta = self.hp.beta
        p_hat = p.detach()
        p_hat = p_hat / p_hat.sum(dim=1, keepdim=True)
        self.target[idx] = beta * self.target[idx] + (1 - beta) * p_hat
        return self.target[idx]

    def loss(self, model, batch):
        logits = model(batch.x)
        p = F.softmax(logits, dim=1).clamp(self.hp.clamp, 1 - self.hp.clamp)
        t = self.update_target(batch.idx, p)
        reg = torch.log(1 - (t * p).sum(dim=1)).mean()
        self._reg_sum += reg.detach()
        self._reg_n += 1
        return F.cross_entropy(logits, batch.y) + self.hp.lam * reg

    # -- diagnostics ---------------------------------------------------------------------------
    def _target_agreement(self) -> dict:
        train = self.ctx.train
        if train is None:
            return {}
        arg = self.target.argmax(1)
        noisy = train.noisy
        out = {"elr_target_true_clean": arg[~noisy].eq(train.y_true[~noisy]).float().mean().item()}
        if bool(noisy.any()):
            out["elr_target_true_noisy"] = arg[noisy].eq(train.y_true[noisy]).float().mean().item()
        return out

    def epoch_end(self, model, epoch):
        reg = float(self._reg_sum / max(1, self._reg_n))
        self._reg_sum, self._reg_n = 0.0, 0
        return {"elr_reg": reg, **self._target_agreement()}

    def diagnostics(self):
        return {"target_agreement": self._target_agreement(),
                "note": "share of training examples whose ELR target's arg-max is the true class"}
