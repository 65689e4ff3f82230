"""White-box L∞ attacks in pixel units (inputs in [0, 1]), native PyTorch, any device.

Every attack runs with the model in eval mode (BatchNorm statistics and dropout frozen) and
restores the mode it found, as torchattacks does. Only input gradients are computed
(``torch.autograd.grad`` w.r.t. the input), so no parameter gradients are accumulated.

Call shape, for every attack: ``attack(model, x, y, eps, ...) -> x_adv`` with ``x`` of shape
``(N, *input_shape)`` in [0, 1], ``y`` of shape ``(N,)``; ``x_adv`` satisfies
``‖x_adv − x‖∞ ≤ eps`` and ``0 ≤ x_adv ≤ 1``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, mode: str = "eval"):
    """Put ``model`` in eval (or train) mode for the block and restore its mode afterwards."""
    was_training = model.training
    model.train(mode == "train")
    try:
        yield model
    finally:
        model.train(was_training)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def _input_grad(model, x_adv, y, loss_fn):
    x_adv = x_adv.detach().requires_grad_(True)
    loss = loss_fn(model(x_adv), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def _ce_sum(logits, y):
    return F.cross_entropy(logits, y, reduction="sum")


def fgsm(model, x, y, eps: float, *, step: float | None = None, random_start: bool = False,
         bn_mode: str = "eval", loss_fn=_ce_sum) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015), optionally with a uniform random start
    (FGSM-RS, Wong et al. 2020 "Fast is better than free": init U[−ε, ε], step 1.25·ε).

    Args:
        eps: L∞ radius. step: step size (default ``eps``; ``1.25*eps`` for FGSM-RS).
        random_start: start from ``x + U[−eps, eps]``.
    """
    if eps == 0:
        return x.detach().clone()
    step = eps if step is None else step
    with eval_mode(model, bn_mode):
        x_adv = x.detach().clone()
        if random_start:
            x_adv = _project(x_adv + torch.empty_like(x).uniform_(-eps, eps), x, eps)
        grad = _input_grad(model, x_adv, y, loss_fn)
        return _project(x_adv + step * grad.sign(), x, eps).detach()


def pgd(model, x, y, eps: float, *, steps: int = 10, step: float | None = None,
        random_start: bool = True, restarts: int = 1, bn_mode: str = "eval",
        loss_fn=_ce_sum) -> torch.Tensor:
    """Projected Gradient Descent, L∞ (Madry et al. 2018).

    ``steps`` sign-gradient ascent steps of size ``step`` (default ``2.5·eps/steps``, the rule of
    Madry et al.) from a uniform random start, projected onto the ε-ball and [0, 1]. With
    ``restarts > 1`` the per-example worst case is kept: an example counts as broken if any
    restart breaks it.
    """
    if eps == 0 or steps == 0:
        return x.detach().clone()
    step = 2.5 * eps / steps if step is None else step
    with eval_mode(model, bn_mode):
        best, fooled = None, None
        for _ in range(max(1, restarts)):
            x_adv = x.detach().clone()
            if random_start:
                x_adv = _project(x_adv + torch.empty_like(x).uniform_(-eps, eps), x, eps)
            for _ in range(steps):
                grad = _input_grad(model, x_adv, y, loss_fn)
                x_adv = _project(x_adv.detach() + step * grad.sign(), x, eps)
            if restarts <= 1:
                return x_adv.detach()
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            if best is None:
                best, fooled = x_adv.detach().clone(), wrong
            else:
                take = wrong & ~fooled
                best[take] = x_adv[take]
                fooled |= wrong
        return best.detach()


def trades_adversary(model, x, eps: float, *, steps: int = 10, step: float | None = None,
                     init_std: float = 0.001, bn_mode: str = "eval") -> torch.Tensor:
    """The inner maximisation of TRADES (Zhang et al. 2019): maximise
    KL(f(x) ‖ f(x')) over the ε-ball, starting from ``x + 0.001·N(0, I)``."""
    step = 2.5 * eps / steps if step is None else step
    with eval_mode(model, bn_mode):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        x_adv = (x.detach() + init_std * torch.randn_like(x)).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = _project(x_adv.detach() + step * grad.sign(), x, eps)
        return x_adv.detach()


def fork_rng(device: torch.device):
    """``torch.random.fork_rng`` for the CPU generator and ``device``'s: what a check seeded inside it
    draws leaves the training's RNG streams as they were (``torch.manual_seed`` reseeds CUDA's and
    MPS's generators too, and augmentation and dropout draw from them there)."""
    accel = device.type in ("cuda", "mps")
    return torch.random.fork_rng(devices=[device] if accel else [], device_type=device.type if accel else None)


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched."""
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def batched_attack(attack, model, x, y, eps, batch_size: int = 512, **kw) -> torch.Tensor:
    """Run ``attack`` over ``x`` in batches (bounded memory for large evaluation sets)."""
    return torch.cat([attack(model, x[i:i + batch_size], y[i:i + batch_size], eps, **kw)
                      for i in range(0, len(x), batch_size)])
