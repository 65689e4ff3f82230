"""DRO without group labels: the worst-case reweighting of the batch's per-example losses within a
CVaR or χ² ball around the empirical distribution (Levy, Carmon, Duchi & Sidford 2020)."""

from __future__ import annotations

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


def cvar_weights(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """The CVaR_α best response: weight 1/(α·m) on the ⌊α·m⌋ largest losses, the remainder
    1 − ⌊α·m⌋/(α·m) on the next one, 0 elsewhere (daniellevy/fast-dro ``best_response``, reg = 0)."""
    m = losses.numel()
    cutoff = int(alpha * m)
    p = torch.zeros_like(losses)
    order = torch.argsort(losses, descending=True)
    p[order[:cutoff]] = 1.0 / (alpha * m)
    if cutoff < m:
        p[order[cutoff]] = 1.0 - cutoff / (alpha * m)
    return p


def chi_square_weights(losses: torch.Tensor, rho: float, tol: float = 1e-9, max_iter: int = 200) -> torch.Tensor:
    """The best response within the χ² ball {p : ½·mean((m·p − 1)²) ≤ ρ}: p ∝ (ℓ − η)₊ with η
    found by bisection so that the constraint is tight (fast-dro, reg = 0). Equal losses give uniform weights;
    a batch too small for the ball (m ≤ 1 + 2ρ) puts all weight on its largest losses (as fast-dro)."""
    v = losses.double()
    m = v.numel()
    if (v.max() - v.min()) <= 1e-5 * v.max().abs().clamp(min=1e-12):
        return torch.full_like(losses, 1.0 / m)
    if m <= 1 + 2 * rho:
        top = (v == v.max()).double()
        return (top / top.sum()).to(losses)

    def p_of(eta):
        w = torch.relu(v - eta)
        return w / w.sum()

    def gap(eta):  # increasing in η: the divergence grows as the mass concentrates
        return 0.5 * torch.mean((m * p_of(eta) - 1) ** 2) - rho

    # for η ≤ min ℓ the divergence is ½·var(ℓ)/(mean ℓ − η)², which is ρ at mean − √(var/2ρ):
    # below both, the constraint is slack; just under max ℓ it is violated (m > 1 + 2ρ)
    lo = torch.minimum(v.min(), v.mean() - torch.sqrt(v.var(unbiased=False) / (2 * rho)))
    hi = v.max()
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        g = gap(mid)
        if g.abs() <= tol:
            break
        if g > 0:
            hi = mid
        else:
            lo = mid
    return p_of(mid).to(losses)


class _BatchDRO(Technique):
    """Shared: the loss is Σ_i p_i·ℓ_i with p the worst case in the ball (computed without gradient),
    whose gradient is the robust loss's gradient (Danskin). Logs the weights' effective sample share."""

    def weights(self, losses: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __init__(self, hp, ctx):
        super().__init__(hp, ctx)
        self._ess, self._n = torch.zeros((), device=ctx.device), 0

    def robust_loss(self, losses: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = self.weights(losses.detach())
            self._ess += 1.0 / (p.pow(2).sum() * len(p))  # 1/(m·Σp²): 1 uniform, 1/m one example
            self._n += 1
        return p @ losses

    def loss(self, model, batch):
        return self.robust_loss(F.cross_entropy(model(batch.x), batch.y, reduction="none"))

    def epoch_start(self, epoch):
        super().epoch_start(epoch)
        self._ess, self._n = torch.zeros_like(self._ess), 0

    def epoch_end(self, model, epoch):
        return {"dro_effective_share": self._ess.item() / self._n} if self._n else {}


@register
class CVaRDRO(_BatchDRO):
    """CVaR DRO (Levy, Carmon, Duchi & Sidford, NeurIPS 2020, "Large-scale methods for
    distributionally robust optimization"; daniellevy/fast-dro ``RobustLoss``, geometry ``cvar``,
    reg 0) — no group labels needed.

        CVaR_α(ℓ) = sup { Σ_i p_i ℓ_i : p in the simplex, p_i ≤ 1/(α·m) }
                  = (1/(α·m))·[ Σ_{i ≤ k} ℓ_(i) + (α·m − k)·ℓ_(k+1) ],
        k = ⌊α·m⌋, losses sorted ℓ_(1) ≥ ℓ_(2) ≥ …

    on the batch's m per-example cross-entropies: the mean of the top-α fraction of the losses (the
    batch estimator of that paper). α = 1 is ERM. Official MNIST setting: α = 0.02 with batches of
    10–5000; here α is the default 0.1 so that a batch of 64 keeps ≈6 examples.

    Example::

        >>> cfg.arms["cvar"] = {"technique": "cvar_dro", "hparams": {"alpha": 0.1}}
    """

    name = "cvar_dro"
    home_scenario = "spurious"
    home_metric = "worst_group_acc"
    summary = "CVaR DRO: mean of the top-α fraction of per-example losses (no group labels)"
    params = {"alpha": Param(0.1, "CVaR level α: the share of the batch's largest losses kept", low=0.02,
                             high=0.5, log=True, gt=0, le=1)}

    def weights(self, losses):
        return cvar_weights(losses, self.hp.alpha)


@register
class ChiSquareDRO(_BatchDRO):
    """χ² DRO (Levy et al., NeurIPS 2020; daniellevy/fast-dro ``RobustLoss``, geometry
    ``chi-square``, reg 0) — no group labels needed.

        sup { Σ_i p_i ℓ_i : p in the simplex, ½·Σ_i (1/m)·(m·p_i − 1)² ≤ ρ },
        best response p_i ∝ (ℓ_i − η)₊ with η set by bisection so the constraint is tight.

    Upweights high-loss examples smoothly rather than truncating as CVaR does. ρ = 0 is ERM; the
    paper's sweeps use ρ ∈ [0.1, 10] (default here ρ = 1).

    Example::

        >>> cfg.arms["chi2"] = {"technique": "chi2_dro", "hparams": {"rho": 1.0}}
    """

    name = "chi2_dro"
    home_scenario = "spurious"
    home_metric = "worst_group_acc"
    summary = "χ² DRO: worst case of the batch losses in a χ² ball of radius ρ (no group labels)"
    params = {"rho": Param(1.0, "radius ρ of the χ² ball", low=0.1, high=10.0, log=True, ge=0)}

    def weights(self, losses):
        if self.hp.rho == 0:
            return torch.full_like(losses, 1.0 / losses.numel())
        return chi_square_weights(losses, self.hp.rho)
