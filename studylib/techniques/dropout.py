"""Dropout, with Monte-Carlo dropout at test time for calibration."""

from __future__ import annotations

from .._lazy import lazy_import
from ..metrics import expected_calibration_error
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
attacks = lazy_import("studylib.attacks")


def mc_dropout_probs(model: torch.nn.Module, x: torch.Tensor, samples: int, seed: int = 0,
                     batch_size: int = 512) -> torch.Tensor:
    """Mean softmax over ``samples`` stochastic passes with the dropout layers active and every
    other layer in eval mode (BatchNorm keeps its running statistics). The model's modes are
    restored afterwards; the passes draw from their own seeded RNG, so training is unaffected
    and the result is reproducible. Shape ``(N, C)``."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in dropouts:
            m.train()
        with torch.no_grad(), attacks.fork_rng(x.device):
            torch.manual_seed(seed)
            total = None
            for _ in range(samples):
                p = torch.cat([F.softmax(model(x[i:i + batch_size]), 1) for i in range(0, len(x), batch_size)])
                total = p if total is None else total + p
    finally:
        for m, mode in modes.items():
            m.training = mode
    return total / samples


@register
class Dropout(Technique):
    """Dropout (Srivastava et al., JMLR 2014; Hinton et al. 2012) and MC dropout (Gal &
    Ghahramani, ICML 2016).

    Training: each unit of the dropped layers is zeroed with probability p and the survivors scaled
    by 1/(1−p) (inverted dropout, ``torch.nn.Dropout``); the loss is plain cross-entropy. The rate
    is a *model* setting: this technique sets ``model.dropout = rate`` through
    ``model_overrides`` (the small CNN drops before each of its two dense layers; the MLP after
    each hidden layer). At test the deterministic prediction uses the full network (the usual
    weight-scaling rule); MC dropout instead averages T stochastic passes,

        p̂(y | x) = (1/T) Σ_t softmax(f(x; ẑ_t)),  ẑ_t ~ Bernoulli(1 − p) masks,

    an approximate Bayesian predictive distribution. ``score`` adds ``mc_acc``, ``mc_ece`` and
    ``mc_nll`` to the scorecard, beside the deterministic ``clean_acc``, ``ece`` and ``nll``.

    Defaults from the papers: p = 0.5 for hidden units (0.2 for inputs, not used here); Gal &
    Ghahramani average T = 10–100 passes (here 20).

    Example::

        >>> cfg.arms["dropout_50"] = {"technique": "dropout", "hparams": {"rate": 0.5, "mc_samples": 20}}
    """

    name = "dropout"
    summary = "dropout at rate p in the model; MC-dropout (T passes) accuracy and ECE at test"
    home_scenario = "small_data"
    # the claim is better test accuracy on small data; a smaller train − test gap alone could come
    # from underfitting (the gap is on the scorecard and in the study's figures)
    home_metric = "clean_acc"
    params = {
        "rate": Param(0.5, "dropout probability p (0 ≤ p < 1; the study sweeps 0–0.7)", low=0.0, high=0.7,
                      ge=0, lt=1),
        "mc_samples": Param(20, "stochastic test passes T of MC dropout", low=10, high=100, ge=1),
    }

    @classmethod
    def model_overrides(cls, hp):
        return {"dropout": hp["rate"]}

    def score(self, model, data):
        test = data.test
        probs = mc_dropout_probs(model, test.x, self.hp.mc_samples)
        # (the eval config is not visible to a technique)
        return {"mc_acc": probs.argmax(1).eq(test.y).float().mean().item(),
                "mc_ece": expected_calibration_error(probs, test.y, self.ctx.config.eval.ece_bins if self.ctx.config else 15),
                "mc_nll": F.nll_loss(probs.clamp_min(1e-12).log(), test.y).item()}
