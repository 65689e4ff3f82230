"""Class-weighted ERM for long-tailed classes: static re-weighting (inverse, √inverse, effective
number), deferred re-weighting (DRW) and an adaptive rule that upweights the classes the model gets
wrong on validation."""

from __future__ import annotations

import math

from .._lazy import lazy_import, no_grad
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

WEIGHTINGS = ("uniform", "inverse", "sqrt_inverse", "class_balanced", "drw", "adaptive")


def normalise(w: torch.Tensor) -> torch.Tensor:
    """Scale positive weights to sum to the number of classes C (the convention of Cui et al. and
    kaidic/LDAM-DRW), so uniform weights are all 1."""
    return w * (len(w) / w.sum())


def inverse_weights(counts: torch.Tensor) -> torch.Tensor:
    """w_c ∝ 1/n_c, summing to C."""
    return normalise(1.0 / counts.double().clamp(min=1)).float()


def sqrt_inverse_weights(counts: torch.Tensor) -> torch.Tensor:
    """w_c ∝ 1/√n_c, summing to C."""
    return normalise(counts.double().clamp(min=1).rsqrt()).float()


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): w_c = (1−β)/(1−β^{n_c}) = 1/E_{n_c}, summing to C.
    β → 0 gives uniform weights, β → 1 inverse frequency."""
    n = counts.double().clamp(min=1)
    return normalise((1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))).float()


def drw_switch_epoch(epochs: int, fraction: float) -> int:
    """The first (1-based) epoch trained with class-balanced weights. The first
    ⌊fraction·epochs + ½⌋ epochs are uniform (at most epochs − 1, so at least one epoch is
    re-weighted). LDAM-DRW switches at epoch 160 of 200 (0-based ``epoch // 160``), i.e. on the
    161st: fraction 0.8 reproduces that and scales it to any epoch budget."""
    uniform_epochs = min(epochs - 1, math.floor(fraction * epochs + 0.5))
    return uniform_epochs + 1


@register
class ClassWeightedERM(Technique):
    """Class-weighted ERM for class imbalance.

        loss = Σ_i w_{y_i} · CE(f(x_i), y_i) / Σ_i w_{y_i}     (torch's ``cross_entropy(weight=w)``,
                                                               as in kaidic/LDAM-DRW)

    with the class weights w (normalised to sum to C, n_c = training examples of class c):

    * ``inverse``: w_c ∝ 1/n_c; ``sqrt_inverse``: w_c ∝ 1/√n_c.
    * ``class_balanced``: w_c ∝ (1−β)/(1−β^{n_c}), the inverse effective number of samples
      (Cui et al., CVPR 2019, richardaecn/class-balanced-loss; β = 0.9999). With a few hundred
      examples per class 1−β^{n} ≈ n(1−β), so β = 0.9999 is close to inverse frequency here.
    * ``drw``: deferred re-weighting (Cao et al., NeurIPS 2019, kaidic/LDAM-DRW): uniform weights,
      then class-balanced (β = 0.9999) after the first ⌊``drw_fraction``·epochs⌉ epochs (official: 160
      of 200 epochs, fraction 0.8). The LDAM margin of that paper is not part of this technique.
    * ``adaptive``: at the end of every epoch the per-class error e_c of the current model on the
      validation split (``signal``: the 0/1 error rate, or by default the soft error 1 − mean p(y|x)
      over the class's validation examples) updates a running error ē_c ← m·ē_c + (1−m)·e_c
      (ē = 0 at the start), and w_c ∝ 1 + (λ_up − 1)·ē_c: the classes the model "has a hard time
      with" gain weight. This is JTT's error-set upweighting (Liu et al., ICML 2021: examples the
      model gets wrong weigh λ_up, the others 1) at the level of classes, measured on held-out data,
      since training examples of rare classes are soon memorised and leave no error set. In the
      literature "CW-ERM" also names Closed-loop Weighted ERM (Kumar et al. 2022), which likewise
      upweights failure cases. Classes absent from validation keep ē_c. With a handful of validation
      examples in the tail, e_c is coarse (0 or 1 for a class with one example): the soft error
      grades it, the momentum m smooths it.
    * ``uniform``: plain ERM through this technique (a control).

    Weights are computed from ``ctx.class_counts`` (the training labels as given). The weights at the
    end of each epoch are in the history (``w_0``…), the final ones in the diagnostics. The adaptive
    rule trains on a signal from the validation split, so that split is no longer untouched for
    the adaptive arm: select its epoch with a rule that does not reuse it (e.g. ``last``).

    Example::

        >>> cfg.arms["cw_cb"] = {"technique": "cw_erm", "hparams": {"weighting": "class_balanced"}}
        >>> cfg.arms["cw_drw"] = {"technique": "cw_erm", "hparams": {"weighting": "drw", "drw_fraction": 0.8}}
        >>> cfg.arms["cw_adaptive"] = {"technique": "cw_erm",
        ...                            "hparams": {"weighting": "adaptive", "upweight": 20.0}}
    """

    name = "cw_erm"
    home_scenario = "imbalance"
    home_metric = "balanced_acc"
    summary = "class-weighted cross-entropy: inverse / √inverse / effective-number weights, DRW, adaptive"
    params = {
        "weighting": Param("class_balanced", "the weighting rule", choices=WEIGHTINGS),
        "beta": Param(0.9999, "β of the effective number (class_balanced, drw)", low=0.9, high=0.99999,
                      ge=0, lt=1),
        "drw_fraction": Param(0.8, "share of the epochs trained with uniform weights before DRW switches",
                              low=0.3, high=0.9, ge=0, lt=1),
        "upweight": Param(20.0, "λ_up of the adaptive rule: weight of a class wrong on every validation example",
                          low=2.0, high=100.0, log=True, ge=1),
        "signal": Param("soft_error", "adaptive rule's per-class error: 0/1 error, or 1 − mean probability of "
                        "the true class (graded, so a class right by a hair still counts)",
                        choices=("error", "soft_error")),
        "momentum": Param(0.5, "m of the adaptive rule's running validation error", low=0.0, high=0.9, ge=0, lt=1),
    }

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        counts = ctx.class_counts.to("cpu")
        C = len(counts)
        self.uniform = torch.ones(C)
        self.balanced = effective_number_weights(counts, hp.beta)
        rule = hp.weighting
        if rule == "inverse":
            w = inverse_weights(counts)
        elif rule == "sqrt_inverse":
            w = sqrt_inverse_weights(counts)
        elif rule == "class_balanced":
            w = self.balanced
        else:  # uniform, drw (before the switch), adaptive (before any validation signal)
            w = self.uniform
        self.weights = w.to(ctx.device)
        self.switch_epoch = drw_switch_epoch(ctx.epochs, hp.drw_fraction) if rule == "drw" else None
        self.val_error = torch.zeros(C, device=ctx.device)  # ē_c of the adaptive rule

    def epoch_start(self, epoch):
        super().epoch_start(epoch)
        if self.switch_epoch is not None:
            w = self.balanced if epoch >= self.switch_epoch else self.uniform
            self.weights = w.to(self.ctx.device)

    def loss(self, model, batch):
        return F.cross_entropy(model(batch.x), batch.y, weight=self.weights)

    @no_grad
    def update_adaptive(self, errors: torch.Tensor, present: torch.Tensor) -> None:
        """One adaptive step from per-class validation errors (classes not ``present`` keep ē_c)."""
        m = self.hp.momentum
        errors, present = errors.to(self.val_error), present.to(self.val_error.device)
        self.val_error = torch.where(present, m * self.val_error + (1 - m) * errors, self.val_error)
        self.weights = normalise(1.0 + (self.hp.upweight - 1.0) * self.val_error)

    def epoch_end(self, model, epoch):
        if self.hp.weighting == "adaptive" and self.ctx.val is not None:
            errors, present = class_errors(model, self.ctx.val, self.ctx.num_classes,
                                           soft=self.hp.signal == "soft_error")
            self.update_adaptive(errors, present)
        return {f"w_{c}": float(w) for c, w in enumerate(self.weights.tolist())}

    def diagnostics(self):
        out = {"weights": [float(w) for w in self.weights.tolist()], "weighting": self.hp.weighting}
        if self.switch_epoch is not None:
            out["drw_switch_epoch"] = self.switch_epoch
        if self.hp.weighting == "adaptive":
            out["val_error"] = [float(e) for e in self.val_error.tolist()]
        return out


@no_grad
def class_errors(model, split, num_classes: int, soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class error of ``model`` on ``split`` (given labels) — the 0/1 error rate, or with ``soft``
    1 − the mean predicted probability of the true class — and which classes are present."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(split.x[i:i + 1024]) for i in range(0, len(split), 1024)])
    finally:
        model.train(was_training)
    if soft:
        wrong = 1.0 - logits.softmax(1).gather(1, split.y[:, None]).squeeze(1)
    else:
        wrong = (logits.argmax(1) != split.y).float()
    counts = torch.bincount(split.y, minlength=num_classes).float()
    errors = torch.zeros(num_classes, device=wrong.device).index_add_(0, split.y, wrong) / counts.clamp(min=1)
    return errors, counts > 0
