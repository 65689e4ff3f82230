"""Input augmentation against test-time corruptions: Gaussian noise and "variety" (random shifts
and rotations). Two registered techniques that share one loss: cross-entropy on an augmented copy
of each training batch, drawn fresh every step from torch's RNG (seeded by the run's seed).

* ``gaussian_noise_aug`` — x̃ = clamp(x + σ·ε, 0, 1), ε ~ N(0, I).
* ``variety_aug``        — x̃ = a random small affine transform of x (shift and rotation), optionally
  followed by Gaussian noise (``sigma > 0``: both augmentations together).

Two names rather than one technique with a mode switch: each keeps only the hyperparameters it uses
(a sweep over ``gaussian_noise_aug`` never draws meaningless shift ranges), and the scorecard's
technique column says which augmentation an arm used.

The augmentation functions take inputs of shape (N, C, H, W) or (N, C, L) in [0, 1] and return the
same shape in [0, 1]; rotation applies to 2-D inputs only (1-D signals are shifted).
"""

from __future__ import annotations

import math

from .._lazy import lazy_import
from .base import Param, Technique, register

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


def _per_example_mask(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean (N, 1, ..., 1) mask: which examples of the batch are augmented (probability p)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    if p >= 1:
        return torch.ones(shape, dtype=torch.bool, device=x.device)
    return torch.rand(shape, generator=generator, device=x.device) < p


def gaussian_noise(x: torch.Tensor, sigma: float, p: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """clamp(x + σ·N(0, I), 0, 1) on a random share ``p`` of the examples (the rest unchanged).

    ``generator`` (on ``x``'s device) makes the draw reproducible; None uses torch's global RNG,
    which the training loop seeds with the run's seed.
    """
    if sigma == 0 or p == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noisy = (x + sigma * noise).clamp(0.0, 1.0)
    return torch.where(_per_example_mask(x, p, generator), noisy, x)


def random_affine(x: torch.Tensor, max_shift: float, max_rotation: float, p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random shift of up to ``max_shift`` pixels along each axis (uniform in [−s, s], independent
    per axis) and, for 2-D inputs, a rotation about the centre by an angle uniform in
    [−``max_rotation``, ``max_rotation``] degrees; bilinear resampling with a zero (background)
    border, as :mod:`studylib.corruptions` does for its shift/rotation corruptions. Applied to a
    random share ``p`` of the examples. Rotation assumes square pixels in the [−1, 1] grid (digits
    are 8×8).
    """
    if (max_shift == 0 and max_rotation == 0) or p == 0:
        return x
    n, two_d = x.shape[0], x.dim() == 4
    u = torch.rand(n, 3, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1  # U[−1, 1]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    angle = u[:, 2] * math.radians(max_rotation) if two_d else torch.zeros_like(u[:, 2])
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # affine_grid works in [−1, 1] coordinates: one pixel is 2/size
    theta[:, 0, 2] = u[:, 0] * max_shift * 2 / x.shape[-1]
    if two_d:
        theta[:, 1, 2] = u[:, 1] * max_shift * 2 / x.shape[-2]
    x4 = x if two_d else x.unsqueeze(2)  # (N, C, L) -> (N, C, 1, L)
    grid = F.affine_grid(theta, list(x4.shape), align_corners=False)
    out = F.grid_sample(x4, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = (out if two_d else out.squeeze(2)).clamp(0.0, 1.0)
    return torch.where(_per_example_mask(x, p, generator), out, x)


@register
class GaussianNoiseAug(Technique):
    """Gaussian input-noise augmentation (Bishop 1995, "Training with noise is equivalent to
    Tikhonov regularization"; the Gaussian-augmentation baseline of Hendrycks & Dietterich, ICLR
    2019, CIFAR-10-C, and of randomized smoothing, Cohen et al. 2019).

        loss = (1/n) Σ_i CE(f(x̃_i), y_i),   x̃_i = clamp(x_i + σ·ε_i, 0, 1),  ε_i ~ N(0, I)

    with each example noised with probability ``p`` (default 1: every example, every step).
    σ is in pixel units of [0, 1] inputs; the test-time ``gaussian_noise`` corruption uses σ =
    0.05, 0.1, 0.2, 0.3, 0.4 at severities 1–5. Cohen et al. train with σ ∈ {0.12, 0.25, 0.5} on
    CIFAR-10/ImageNet; there is no official default for digits — 0.1 here, sweep 0.05–0.3.

    Example::

        >>> cfg.arms["noise_010"] = {"technique": "gaussian_noise_aug", "hparams": {"sigma": 0.1}}
    """

    name = "gaussian_noise_aug"
    summary = "CE on x + σ·N(0, I), clamped to [0, 1] (Gaussian input-noise augmentation)"
    home_scenario = "clean"  # clean training data; the shift comes at test time (corruptions)
    # the claim rests on the corruptions it did not train on (Gaussian noise is one it trains on)
    home_metric = "corruption_acc_heldout"
    params = {
        "sigma": Param(0.1, "noise std σ in pixel units", low=0.02, high=0.4, log=True, ge=0, le=1),
        "p": Param(1.0, "share of examples noised in each batch", low=0.5, high=1.0, ge=0, le=1),
    }

    @classmethod
    def trained_corruptions(cls, hp: dict) -> tuple[str, ...]:
        hp = {**cls.defaults(), **hp}
        return ("gaussian_noise",) if hp["sigma"] > 0 and hp["p"] > 0 else ()

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_noise(x, self.hp.sigma, self.hp.p)

    def loss(self, model, batch):
        return F.cross_entropy(model(self.augment(batch.x)), batch.y)


@register
class VarietyAug(GaussianNoiseAug):
    """"Variety" augmentation: random shifts and rotations of the training inputs ("different
    lighting or angles", seed 001), the classic translation / rotation augmentation of digit
    recognisers (Simard, Steinkraus & Platt, ICDAR 2003; LeCun et al. 1998's distortions).

        loss = (1/n) Σ_i CE(f(x̃_i), y_i),  x̃_i = clamp(noise_σ(A_i x_i), 0, 1),
        A_i: shift (dx, dy) ~ U[−s, s]² pixels, then rotation by θ ~ U[−r, r] degrees

    drawn per example and per step; ``sigma > 0`` adds Gaussian noise after the transform (both
    augmentations at once). 1-D signals are only shifted. Defaults s = 1 pixel and r = 15° on 8×8
    digits match the middle severities of the test-time shift/rotation corruptions (1.5 px, 15°).

    Example::

        >>> cfg.arms["variety"] = {"technique": "variety_aug", "hparams": {"max_shift": 1.0, "max_rotation": 15}}
    """

    name = "variety_aug"
    summary = "CE on randomly shifted / rotated inputs (optionally + Gaussian noise σ)"
    home_scenario = "clean"
    home_metric = "corruption_acc_heldout"  # the corruptions other than shift, rotation (and noise)
    params = {
        "max_shift": Param(1.0, "largest shift along each axis, in pixels", low=0.0, high=2.5, ge=0),
        "max_rotation": Param(15.0, "largest rotation, in degrees (2-D inputs only)", low=0.0, high=30.0, ge=0, le=180),
        "sigma": Param(0.0, "std of Gaussian noise added after the transform (0: none)", low=0.0, high=0.3, ge=0, le=1),
        "p": Param(1.0, "share of examples transformed (and, independently, noised) in each batch", low=0.5, high=1.0,
                   ge=0, le=1),
    }

    @classmethod
    def trained_corruptions(cls, hp: dict) -> tuple[str, ...]:
        hp = {**cls.defaults(), **hp}
        if hp["p"] == 0:
            return ()
        return tuple(kind for kind, on in (("gaussian_noise", hp["sigma"] > 0), ("shift", hp["max_shift"] > 0),
                                           ("rotation", hp["max_rotation"] > 0)) if on)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        return gaussian_noise(random_affine(x, hp.max_shift, hp.max_rotation, hp.p), hp.sigma, hp.p)
