"""Self-adaptive training (Huang et al. 2020): after a CE warm-up, train on a running average of the
model's own predictions, and weight examples by how confident that average is."""

from __future__ import annotations

import math

from .._lazy import lazy_import
from .base import Param, Technique, register
from .trades import TRADES

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")

ALPHA = Param(0.9, "momentum α of the soft targets", low=0.6, high=0.99, ge=0, lt=1)


class SoftTargets:
    """The per-example soft targets of self-adaptive training, shape (n_train, C).

    Rows start as the one-hot given labels (set on an example's first visit, from the batch).
    ``update`` applies t_i ← α·t_i + (1 − α)·p_i (p detached) and returns the targets and the
    weights w_i = max_j t_ij rescaled so that Σ_i w_i = B over the batch.
    """

    def __init__(self, n: int, num_classes: int, device):
        self.t = torch.zeros(n, num_classes, device=device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=device)
        self._all_seen = False  # after the first epoch: no more checks (each one is a device sync)

    def init(self, idx: torch.Tensor, y: torch.Tensor) -> None:
        if self._all_seen:
            return
        new = ~self.seen[idx]
        self.t[idx[new]] = F.one_hot(y[new], self.t.shape[1]).to(self.t.dtype)
        self.seen[idx[new]] = True
        self._all_seen = bool(self.seen.all())

    def update(self, idx: torch.Tensor, p: torch.Tensor, alpha: float):
        self.t[idx] = alpha * self.t[idx] + (1 - alpha) * p.detach()
        t = self.t[idx]
        w = t.max(dim=1).values
        return t, w * (len(idx) / w.sum())

    def confidence(self) -> torch.Tensor:
        """max_j t_ij of every training example (1 for an untouched one-hot target)."""
        return self.t.max(dim=1).values


def sat_loss(logits: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_i w_i · (−Σ_j t_ij log softmax(z_i)_j)."""
    return (w * -(t * F.log_softmax(logits, dim=1)).sum(dim=1)).mean()


def start_epoch(es_fraction: float, epochs: int) -> int:
    """E_s = es_fraction · epochs rounded half up: CE for epochs 1..E_s, self-adaptive from E_s + 1
    on (the official code's ``epoch < es`` with 0-based epochs)."""
    return math.floor(es_fraction * epochs + 0.5)


class _SelfAdaptive:
    """Soft targets, the E_s switch and the per-epoch weight diagnostics, shared by SAT and
    TRADES+SAT."""

    def _setup(self):
        self.targets = SoftTargets(self.ctx.n_train, self.ctx.num_classes, self.ctx.device)
        self.es = start_epoch(self.hp.es_fraction, self.ctx.epochs)

    @property
    def adaptive(self) -> bool:
        return self.epoch > self.es

    def natural_loss(self, logits, batch):
        self.targets.init(batch.idx, batch.y)
        if not self.adaptive:
            return F.cross_entropy(logits, batch.y)
        t, w = self.targets.update(batch.idx, F.softmax(logits.detach(), dim=1), self.hp.alpha)
        return sat_loss(logits, t, w)

    def state_dict(self):
        return {"t": self.targets.t, "seen": self.targets.seen}

    def load_state_dict(self, state):
        self.targets.t, self.targets.seen = state["t"], state["seen"]
        self.targets._all_seen = bool(self.targets.seen.all())

    def dataset_weights(self) -> torch.Tensor:
        """max_j t_ij over the training split divided by its mean: the weight an example gets
        relative to the average one (a batch rescales by its own mean, so this is about the weight
        the example gets in a batch)."""
        c = self.targets.confidence()
        return c / c.mean()

    def epoch_end(self, model, epoch):
        train = self.ctx.train
        w = self.dataset_weights()
        out = {"sat_active": float(self.adaptive)}
        if train is not None and bool(train.noisy.any()):
            noisy = train.noisy
            out["sat_weight_clean"] = w[~noisy].mean().item()
            out["sat_weight_noisy"] = w[noisy].mean().item()
            out["sat_target_true_noisy"] = self.targets.t.argmax(1)[noisy].eq(train.y_true[noisy]).float().mean().item()
        return out

    def diagnostics(self):
        return {"es_epoch": self.es,
                "weights": [round(v, 5) for v in self.dataset_weights().tolist()],
                "note": "weights: max_j t_ij / mean over the training split, per training example at the end"}


@register
class SAT(_SelfAdaptive, Technique):
    """SAT — Self-Adaptive Training (Huang, Zhang & Zhang, NeurIPS 2020;
    LayneH/self-adaptive-training, ``losses/loss.py``).

    Plain cross-entropy for epochs 1..E_s; from epoch E_s + 1 on, for a batch of B examples with
    logits z_i and dataset indices idx_i::

        p_i = softmax(z_i)  (detached)
        t_i ← α·t_i + (1 − α)·p_i            # per-example soft target, starts as one-hot(y_i)
        w_i = max_j t_ij,  w ← w · B / Σ_i w_i
        loss = (1/B) Σ_i w_i · (−Σ_j t_ij log softmax(z_i)_j)

    Examples whose target stays spread out (typically the noisy-labelled ones, whose given label
    the model disagrees with) get small weights.

    Official defaults: α=0.9, E_s=60 of 200 epochs (CIFAR, ResNet-34, cosine schedule). Here the
    warm-up scales with the epoch budget: **E_s = round(es_fraction · epochs)**, es_fraction = 0.3
    (60/200). Needs ``batch.idx``.

    Per epoch it logs ``sat_weight_clean`` / ``sat_weight_noisy``: the mean of max_j t_ij over
    clean / noisy-labelled training examples, divided by its mean over all of them (1 before E_s);
    ``diagnostics()["weights"]`` holds that weight for every training example at the end.

    Example::

        >>> cfg.arms["sat"] = {"technique": "sat", "hparams": {"alpha": 0.9, "es_fraction": 0.3}}
    """

    name = "sat"
    home_scenario = "label_noise"
    home_metric = "clean_acc"
    summary = "self-adaptive training: CE warm-up, then weighted CE on running-average soft targets"
    params = {
        "alpha": ALPHA,
        "es_fraction": Param(0.3, "CE warm-up as a fraction of the epochs: E_s = round(es_fraction·epochs) (60/200)",
                             low=0.1, high=0.6, ge=0, le=1),
    }

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self._setup()

    def loss(self, model, batch):
        return self.natural_loss(model(batch.x), batch)


@register
class TRADESSAT(_SelfAdaptive, TRADES):
    """TRADES + SAT (Huang et al., NeurIPS 2020; LayneH/self-adaptive-training,
    ``losses/trades.py``): TRADES whose natural term becomes the SAT loss after E_s::

        loss = SAT(z, t, w) + β · (1/B) Σ_i KL( f(x_i) ‖ f(x'_i) )   (CE instead of SAT up to E_s)

    with x' the TRADES adversary (see ``trades``). Official defaults (CIFAR-10, WRN-34-10): α=0.9,
    E_s=70 of 100 epochs (es_fraction 0.7), β=6, ε=0.031, 10 steps of 0.007. Published: PGD-20
    56.68 (TRADES) → 58.03 (TRADES+SAT).

    Example::

        >>> cfg.arms["trades_sat"] = {"technique": "trades_sat", "hparams": {"eps": 0.1, "steps": 7}}
    """

    name = "trades_sat"
    home_metric = "robust_acc"
    summary = "TRADES with the self-adaptive natural term (SAT soft targets and weights after E_s)"
    params = {
        **TRADES.params,
        "alpha": ALPHA,
        "es_fraction": Param(0.7, "warm-up as a fraction of the epochs (70/100 in the official script)",
                             low=0.3, high=0.9, ge=0, le=1),
    }

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self._setup()

    def loss(self, model, batch):
        hp = self.hp
        x_adv = attacks.trades_adversary(model, batch.x, hp.eps, steps=hp.steps,
                                         step=hp.step_ratio * hp.eps, bn_mode=hp.bn_mode)
        logits = model(batch.x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return self.natural_loss(logits, batch) + hp.beta * robust
