"""L1 / L2 / elastic-net weight penalties, added to the loss."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")


def penalized_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors a weight penalty applies to: weights of ≥ 2 dimensions (linear and conv
    layers). Biases and normalisation parameters (1-D) are left out, as in common practice:
    penalising them constrains the function's offset, not its complexity."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def weight_norms(model: torch.nn.Module) -> dict:
    """‖w‖₁ and ‖w‖² (squared L2) over :func:`penalized_weights`, as plain numbers."""
    with torch.no_grad():
        ws = penalized_weights(model)
        return {"weight_l1": float(sum(w.abs().sum() for w in ws)),
                "weight_l2sq": float(sum(w.pow(2).sum() for w in ws))}


@register
class WeightPenalty(Technique):
    """Explicit weight penalty in the loss: L1 (lasso, Tibshirani 1996), L2 (ridge / "weight
    decay" as a loss term, Krogh & Hertz 1991) and elastic net (Zou & Hastie 2005).

        loss = CE(f(x), y) + λ1·‖w‖₁ + λ2·‖w‖²,   ‖w‖² = Σ w² (squared, no ½)

    summed over the **weights of ≥ 2 dimensions only** (linear and conv kernels); biases and
    normalisation parameters are **not** penalised. ``l1 > 0, l2 = 0`` is L1; ``l1 = 0, l2 > 0``
    is L2; both > 0 is elastic net; both 0 is ERM.

    L2 in the loss is *coupled* to the optimizer: its gradient 2·λ2·w passes through Adam's
    per-parameter scaling, exactly like ``train.weight_decay = 2·λ2`` with ``optimizer: adam`` or
    ``sgd`` (which, unlike this penalty, also decays biases). *Decoupled* weight decay (AdamW,
    Loshchilov & Hutter, ICLR 2019) is a different rule — w ← w − lr·wd·w outside the adaptive step
    — and is an optimizer setting, not this technique: ``train: {optimizer: adamw, weight_decay: wd}``.

    L1 here is a subgradient term (sign(w)), so with Adam or SGD weights hover near zero rather
    than landing exactly on it (a proximal step would, and is not used); sparsity is therefore
    measured as the share of weights with |w| < 1e-3 (``weight_sparsity`` in the scorecard).

    Defaults: there is no single official code. The default λ2 = 2.5e-4 is the usual CIFAR ResNet
    recipe's SGD ``weight_decay=5e-4`` written in this formula; L1 is off by default. The
    regularization study (BatchNorm CNN, 109 digits) found λ2 ≈ 3e-2 … 1e-1 and λ1 ≈ 3e-3 useful.

    Example::

        >>> cfg.arms["elastic_net"] = {"technique": "weight_penalty", "hparams": {"l1": 1e-5, "l2": 1e-3}}
    """

    name = "weight_penalty"
    summary = "L1 / L2 / elastic-net penalty λ1‖w‖₁ + λ2‖w‖² on weights (not biases), in the loss"
    home_scenario = "small_data"
    # the claim is better test accuracy on small data; a smaller train − test gap alone could come
    # from underfitting (the gap is on the scorecard and in the study's figures)
    home_metric = "clean_acc"
    params = {
        "l1": Param(0.0, "λ1, weight of ‖w‖₁ (0: no L1)", low=1e-6, high=1e-2, log=True, ge=0),
        "l2": Param(2.5e-4, "λ2, weight of ‖w‖² (squared, no ½; weight_decay=5e-4 ≙ 2.5e-4)",
                    low=1e-5, high=3e-1, log=True, ge=0),
    }

    def penalty(self, model):
        hp = self.hp
        if hp.l1 == 0 and hp.l2 == 0:
            return None
        total = 0.0
        for w in penalized_weights(model):
            if hp.l1:
                total = total + hp.l1 * w.abs().sum()
            if hp.l2:
                total = total + hp.l2 * w.pow(2).sum()
        return total

    def score(self, model, data):
        return weight_norms(model)
