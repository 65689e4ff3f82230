"""Class-weighted ERM for long-tailed classes: static re-weighting (inverse, √inverse, effective
number), deferred re-weighting (DRW) and an adaptive rule that upweights the classes the model gets
wrong on a slice of the training split held out from its gradient steps (never the validation
split)."""

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
    * ``adaptive``: a fixed stratified share ``holdout`` of the *training* split (per class of the
      given label: ⌊holdout·n_c + ½⌋ examples, at least one for a class of ≥ 2 and never all of
      them; drawn once by the run's seed, :func:`stratified_holdout`) is held out from gradient
      steps — the loop draws batches from the rest (``train_index``). At the end of every epoch the
      per-class error e_c of the current model on that held-out slice (``signal``: the 0/1 error
      rate, or by default the soft error 1 − mean p(y|x) over the class's held-out examples) updates
      a running error ē_c ← m·ē_c + (1−m)·e_c (ē = 0 at the start), and w_c ∝ 1 + (λ_up − 1)·ē_c:
      the classes the model "has a hard time with" gain weight. This is JTT's error-set upweighting
      (Liu et al., ICML 2021: examples the model gets wrong weigh λ_up, the others 1) at the level
      of classes. In the literature "CW-ERM" also names Closed-loop Weighted ERM (Kumar et al.
      2022), which likewise upweights failure cases.

      *Why a held-out slice of the training split.* The validation split is the loop's, for model
      selection: a technique that trained on its labels would then compete in a selection made on
      the same labels. The training examples themselves are a weak signal: a network memorises the
      few examples of a rare class within a few epochs, after which their error is ≈0 and the
      weights fall back towards uniform (JTT gets a training error set only from an early-stopped
      first model). Held-out examples keep an honest error for as long as the model generalises
      badly to a class. The price, ``holdout`` of the training examples (1 of 2 for the rarest
      class at ratio 50), is paid by a *first fit* only: with ``refit`` (the default) the loop
      fits the rule first (:meth:`first_fit`: this run with ``refit: False``), then trains the run
      from scratch on the *whole* training split with the first fit's final weights fixed — JTT's
      two stages (anniesch/jtt: the final model retrains on the whole training set, the error set
      upweighted) — so the arm trains on the same examples as its ERM twin; the cost is two fits
      (the run's training time counts both). ``refit: False`` keeps the first fit. ``holdout = 0`` measures e_c on the training
      examples themselves (every example trains), the weak signal, kept for comparison. Classes
      without a held-out example keep ē_c. With a handful of held-out examples in the tail, e_c is
      coarse (0 or 1 for a class with one example): the soft error grades it, the momentum m
      smooths it. The rule never reads the validation split.
    * ``uniform``: plain ERM through this technique (a control).

    Weights are computed from ``ctx.class_counts`` (the training labels as given). The weights at the
    end of each epoch are in the history (``w_0``…), the final ones in the diagnostics (with the
    adaptive rule's running error ``class_error`` and its held-out examples per class).

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
        "upweight": Param(20.0, "λ_up of the adaptive rule: weight of a class wrong on every held-out example",
                          low=2.0, high=100.0, log=True, ge=1),
        "signal": Param("soft_error", "adaptive rule's per-class error: 0/1 error, or 1 − mean probability of "
                        "the true class (graded, so a class right by a hair still counts)",
                        choices=("error", "soft_error")),
        "momentum": Param(0.5, "m of the adaptive rule's running held-out error", low=0.0, high=0.9, ge=0, lt=1),
        "holdout": Param(0.2, "adaptive rule: share of each class's training examples held out from gradient "
                         "steps to measure its error on (0: the training examples themselves)",
                         low=0.1, high=0.3, ge=0, lt=1),
        "refit": Param(True, "adaptive rule with holdout > 0: learn the weights in a first fit, then refit on the "
                       "whole training split with them fixed (False: keep the first fit)"),
    }

    state = ("weights", "class_error")

    @classmethod
    def first_fit(cls, cfg):
        """The adaptive rule with a held-out slice (and ``refit``) learns its weights in a first fit:
        this run with ``refit: False``."""
        hp = {**cls.defaults(), **cfg.hparams}
        if hp["weighting"] != "adaptive" or hp["holdout"] == 0 or not hp["refit"]:
            return None
        return cfg.model_copy(update={"hparams": {**cfg.hparams, "refit": False}})

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
        self.class_error = torch.zeros(C, device=ctx.device)  # ē_c of the adaptive rule
        # the adaptive rule's signal: a held-out slice of the training split (or the split itself)
        self._trained, self.signal, self.learned = None, None, None
        if rule == "adaptive" and ctx.first is not None:  # the refit: the first fit's weights, fixed
            self.learned = ctx.first.technique
            self.weights = self.learned.weights.to(ctx.device)
            self.class_error = self.learned.class_error.to(ctx.device)
        elif rule == "adaptive" and ctx.train is not None:
            self.signal = ctx.train
            if hp.holdout > 0:
                seed = ctx.config.seed if ctx.config is not None else 0
                self._trained, held_out = stratified_holdout(ctx.train.y, C, hp.holdout, seed)
                self.signal = ctx.train.subset(held_out.to(ctx.train.y.device))

    def epoch_start(self, epoch):
        super().epoch_start(epoch)
        if self.switch_epoch is not None:
            w = self.balanced if epoch >= self.switch_epoch else self.uniform
            self.weights = w.to(self.ctx.device)

    def loss(self, model, batch):
        return F.cross_entropy(model(batch.x), batch.y, weight=self.weights)

    def train_index(self):
        """The adaptive rule trains on the training split less its held-out slice."""
        return self._trained

    @no_grad
    def update_adaptive(self, errors: torch.Tensor, present: torch.Tensor) -> None:
        """One adaptive step from per-class held-out errors (classes not ``present`` keep ē_c)."""
        m = self.hp.momentum
        errors, present = errors.to(self.class_error), present.to(self.class_error.device)
        self.class_error = torch.where(present, m * self.class_error + (1 - m) * errors, self.class_error)
        self.weights = normalise(1.0 + (self.hp.upweight - 1.0) * self.class_error)

    def epoch_end(self, model, epoch):
        if self.signal is not None:
            errors, present = class_errors(model, self.signal, self.ctx.num_classes,
                                           soft=self.hp.signal == "soft_error")
            self.update_adaptive(errors, present)
        return {f"w_{c}": float(w) for c, w in enumerate(self.weights.tolist())}

    def diagnostics(self):
        out = {"weights": [float(w) for w in self.weights.tolist()], "weighting": self.hp.weighting}
        if self.switch_epoch is not None:
            out["drw_switch_epoch"] = self.switch_epoch
        if self.hp.weighting == "adaptive":
            out["class_error"] = [float(e) for e in self.class_error.tolist()]
            if self.signal is not None:
                out["signal_examples_per_class"] = torch.bincount(
                    self.signal.y, minlength=self.ctx.num_classes).tolist()
            if self.learned is not None:  # the refit: what the first fit learned the weights on
                first = self.ctx.first
                out["first_fit"] = {**{k: v for k, v in self.learned.diagnostics().items() if k != "weighting"},
                                    "trained_examples": first.trained_examples, "epochs_run": first.epochs_run,
                                    "train_seconds": first.train_seconds,
                                    "history": [{k: v for k, v in row.items() if k == "epoch" or k.startswith("w_")}
                                                for row in first.history]}
        return out


def stratified_holdout(y: torch.Tensor, num_classes: int, fraction: float,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held_out) positions (sorted, CPU) of a stratified split of labels ``y``: per class
    ⌊fraction·n_c + ½⌋ examples held out, at least one when n_c ≥ 2 and at most n_c − 1 (every
    class keeps a training example); drawn by a generator of its own seeded with ``seed`` (the
    global RNG is untouched)."""
    y = y.cpu()
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c).flatten()
        n = len(idx)
        k = min(n - 1, max(1, int(fraction * n + 0.5))) if n >= 2 else 0
        held.append(idx[torch.randperm(n, generator=gen)[:k]])
    held_out = torch.cat(held).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


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
