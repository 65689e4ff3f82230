"""Group DRO: minimise the worst-group loss by online mirror ascent on group weights (Sagawa et al.
2020)."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


def group_mean_losses(losses: torch.Tensor, group: torch.Tensor,
                      n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-example loss of each group in the batch, and the group counts; a group absent from
    the batch gets loss 0 (official ``compute_group_avg``: the count is clamped to 1)."""
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add(0, group, losses)
    counts = torch.bincount(group, minlength=n_groups).to(losses.dtype)
    return sums / counts.clamp(min=1), counts


@register
class GroupDRO(Technique):
    """Group DRO (Sagawa, Koh, Hashimoto & Liang, ICLR 2020; kohpangwei/group_DRO ``loss.py``).

    Per batch, with ℓ_g the mean cross-entropy of the batch's examples of group g (0 when the
    group is absent from the batch) and n_g the group's training count:

        ℓ̃_g = ℓ_g + C/√n_g                       (generalization adjustment; C = 0: none)
        q_g ← q_g·exp(η·ℓ̃_g),  q ← q / Σ_g q_g     (q starts uniform; no gradient through q)
        loss = Σ_g q_g·ℓ̃_g                        (with the updated q)

    The adjustment shifts q towards small groups; in the loss it is a constant, so it does not change
    the gradient (the official code adds it in place, so its loss carries it too). Official
    defaults: η = 0.01 (``--robust_step_size``), C = 0 unless tuned (the paper's C ∈ {0,…,5});
    the paper's finding is that Group DRO beats ERM on the worst group only with strong ℓ2
    regularisation (Waterbirds λ = 1, CelebA 0.1) or early stopping — both are the training loop's
    (``train.weight_decay``, ``train.select: val_worst_group_acc``), not this technique's. η is a
    per-step rate: 0.01 is set for ≈10⁴ steps; over the ≈450 steps of the kit's DRO study q stays
    near uniform at 0.01, and that study uses η = 0.5, chosen on validation (``params/dro.yaml``).

    Batches are drawn group-balanced by default (``sampler = "group_balanced"``), as in every
    official run (``--reweight_groups``: with replacement, each example weighted 1/n_g, as many
    batches per epoch as a plain epoch), so each group is equally likely per draw and its ℓ_g is
    estimated from ≈ batch/G examples rather than from the one or two a uniform batch holds of a
    2% group; ``train.sampler: uniform`` switches it off for an arm.

    q after every epoch and its mean over the epoch's batches are in the history (``q_0``…,
    ``q_mean_0``…); the final q is in the diagnostics. Needs ``batch.group``: in the spurious
    scenario 2·label group + attribute; in the others the label *as given* (noisy under label
    noise — the groups come from what the learner sees, never from clean labels).

    Example::

        >>> cfg.arms["group_dro"] = {"technique": "group_dro", "hparams": {"eta": 0.01, "adjustment": 0.0}}
    """

    name = "group_dro"
    home_scenario = "spurious"
    home_metric = "worst_group_acc"
    sampler = "group_balanced"
    summary = "Group DRO: exponentiated-gradient weights q on group losses (Sagawa et al. 2020)"
    params = {
        "eta": Param(0.01, "step size η of the q update (0: q stays uniform — group-balanced reweighting)",
                     low=1e-3, high=1.0, log=True, ge=0),
        "adjustment": Param(0.0, "generalization adjustment C in ℓ_g + C/√n_g", low=0.0, high=5.0, ge=0),
    }

    state = ("q",)

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self.q = torch.full((ctx.n_groups,), 1.0 / ctx.n_groups, device=ctx.device)
        # n_g of the training split; an empty group would get an infinite adjustment: clamp to 1
        self.adjust = hp.adjustment / ctx.group_counts.to(ctx.device, torch.float32).clamp(min=1).sqrt()
        self._q_sum = torch.zeros_like(self.q)
        self._steps = 0

    def robust_loss(self, losses: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """One Group DRO step on per-example ``losses``: updates q and returns Σ_g q_g·ℓ̃_g."""
        group_loss, _ = group_mean_losses(losses, group, self.ctx.n_groups)
        adjusted = group_loss + self.adjust.to(group_loss)
        with torch.no_grad():
            q = self.q * torch.exp(self.hp.eta * adjusted.detach())
            self.q = q / q.sum()
            self._q_sum += self.q
            self._steps += 1
        return adjusted @ self.q

    def loss(self, model, batch):
        losses = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        return self.robust_loss(losses, batch.group)

    def epoch_start(self, epoch):
        super().epoch_start(epoch)
        self._q_sum.zero_()
        self._steps = 0

    def epoch_end(self, model, epoch):
        q = self.q.tolist()
        out = {f"q_{g}": v for g, v in enumerate(q)}
        if self._steps:
            out.update({f"q_mean_{g}": v for g, v in enumerate((self._q_sum / self._steps).tolist())})
        return out

    def diagnostics(self):
        return {"q": self.q.tolist(), "eta": self.hp.eta, "adjustment": self.hp.adjustment,
                "group_counts": self.ctx.group_counts.tolist()}
