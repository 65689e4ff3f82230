"""Models. Inputs are in [0, 1]; normalisation happens inside the model (a buffer saved with the
weights), so attacks and ε are in pixel units.

* ``mlp``: flatten → [Linear → (BatchNorm) → ReLU → (Dropout)] × depth → Linear.
* ``cnn``: the kit's small CNN — conv 32 → conv 64 → max-pool → fc 128 → classes (3×3 or
  size-5 kernels for 1-D signals), with optional BatchNorm after each conv and dropout before the
  classifier layers.
* ``preact_resnet18``: the adversarial-training literature's CIFAR-10 standard (images only).
* ``resnet9``: the fast small CIFAR network of the DAWNBench / airbench line (images only).
* ``deq``: a deep equilibrium model (torchdeq), below.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        return (x - self.mean) / self.std


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes, cfg: ModelConfig, mean=0.0, std=1.0):
        super().__init__()
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        width_in = math.prod(input_shape)
        for _ in range(cfg.depth):
            layers.append(nn.Linear(width_in, cfg.width))
            if cfg.batchnorm:
                layers.append(nn.BatchNorm1d(cfg.width))
            layers.append(nn.ReLU())
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width_in = cfg.width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self, input_shape, num_classes, cfg: ModelConfig, mean=0.0, std=1.0):
        super().__init__()
        two_d = len(input_shape) == 3
        Conv, BN, Pool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if two_d
                          else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d))
        k = 3 if two_d else 5
        c_in, (c1, c2) = input_shape[0], cfg.channels
        layers: list[nn.Module] = [Normalize(mean, std)]
        for a, b in ((c_in, c1), (c1, c2)):
            layers.append(Conv(a, b, k, padding=k // 2))
            if cfg.batchnorm:
                layers.append(BN(b))
            layers.append(nn.ReLU())
        layers.append(Pool(2))
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_feat = self.features(torch.zeros(1, *input_shape)).numel()
        head: list[nn.Module] = [nn.Flatten()]
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head += [nn.Linear(n_feat, cfg.width), nn.ReLU()]
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(cfg.width, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x):
        return self.head(self.features(x))


ARCHITECTURES = {"mlp": MLP, "cnn": SmallCNN}


# -- standard-dataset networks (image inputs (N, C, H, W)) -----------------------------------------
def _needs_images(name: str, input_shape) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"model.arch: {name} needs image inputs (C, H, W), got input shape {tuple(input_shape)}")


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv twice, with a
    1×1 projection of the pre-activated input when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(torch.relu(self.bn2(out))) + skip


class PreActResNet18(nn.Module):
    """PreActResNet-18, the adversarial-training literature's standard CIFAR-10 network (Madry et
    al.'s successors: Wong et al. 2020 fast AT, Rice et al. 2020): a 3×3 stem, four stages of two
    pre-activation blocks (``base_width`` × 1, 2, 4, 8 channels; strides 1, 2, 2, 2), BN-ReLU,
    global average pooling, (dropout,) linear. 11.2M parameters at width 64 on CIFAR-10."""

    def __init__(self, input_shape, num_classes, cfg: ModelConfig, mean=0.0, std=1.0):
        super().__init__()
        _needs_images("preact_resnet18", input_shape)
        w = cfg.base_width
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(input_shape[0], w, 3, 1, 1, bias=False)
        blocks, c_in = [], w
        for c_out, stride in ((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)):
            blocks += [PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x):
        out = self.blocks(self.stem(self.normalize(x)))
        out = torch.relu(self.bn(out)).mean(dim=(2, 3))
        return self.linear(self.dropout(out))


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The fast small CIFAR network: ResNet-9 of the DAWNBench line (Page 2018, the ancestor of
    airbench): conv(w) → conv(2w)+pool+residual → conv(4w)+pool → conv(8w)+pool+residual → global
    max-pool → linear scaled by 1/8. 6.6M parameters at width 64; width 16-32 trains in seconds
    per epoch on a GPU and stays usable on a CPU."""

    def __init__(self, input_shape, num_classes, cfg: ModelConfig, mean=0.0, std=1.0):
        super().__init__()
        _needs_images("resnet9", input_shape)
        w = cfg.base_width
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            _conv_bn(input_shape[0], w), _conv_bn(w, 2 * w, pool=True), _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True), _conv_bn(4 * w, 8 * w, pool=True), _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.linear = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        return self.linear(self.dropout(self.features(self.normalize(x)))) * 0.125


ARCHITECTURES.update({"preact_resnet18": PreActResNet18, "resnet9": ResNet9})


def build_model(cfg: ModelConfig, input_shape, num_classes: int, mean: float = 0.0, std: float = 1.0) -> nn.Module:
    """Build ``cfg.arch`` for inputs of ``input_shape`` (channels first) and ``num_classes``."""
    return ARCHITECTURES[cfg.arch](tuple(input_shape), num_classes, cfg, mean, std)


def rebuild(cfg: ModelConfig, data, state_dict: dict) -> nn.Module:
    """A trained model from its config and saved weights, for ``data`` (a :class:`studylib.data.Data`:
    its input shape, classes and normalisation), in eval mode."""
    model = build_model(cfg, data.input_shape, data.num_classes, data.mean, data.std)
    model.load_state_dict(state_dict)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class DEQNet(nn.Module):
    """A deep equilibrium classifier (Bai, Kolter & Koltun, NeurIPS 2019) built with torchdeq.

        u = Conv(x̂)                                   input injection (x̂: normalised input)
        f(z; u) = GroupNorm(ReLU(Conv(z) + u))          one weight-tied layer
        z* = f(z*; u), found by ``cfg.deq.solver`` from z₀ = 0
        logits = Linear(ReLU(Linear(MaxPool(z*))))

    The explicit counterpart is the ``cnn`` with ``channels: [c, c]``: the same layers applied once
    instead of iterated to equilibrium, hence (almost) the same parameter count.

    Solver statistics of the last forward pass are kept in ``self.last_stats`` (``nstep``: solver
    steps, ``residual``: relative residual ‖f(z)−z‖/‖f(z)‖ per example). ``jacobian_loss=True``
    makes training forwards also store the Hutchinson estimate of ‖∂f/∂z‖²_F at z* in
    ``self.last_jac_loss`` (Bai et al. 2021, Jacobian regularisation).

    The ``unrolled`` attack gradient (Yang et al. 2022) starts at the solver's fixed point z*,
    detached, and backpropagates through ``unroll_steps`` applications of f from there: the
    truncated Neumann series Σ_{i<k} Jⁱ ∂f/∂x of the implicit gradient (one step: the ``naive``
    gradient; many steps of a contractive f: the implicit one). Starting at z* (not at z = 0) the
    forward pass stays at the equilibrium the solver found, also where plain iteration from zero
    would not reach it (GroupNorm can make f expansive).
    """

    def __init__(self, input_shape, num_classes, cfg: ModelConfig, mean=0.0, std=1.0):
        super().__init__()
        from torchdeq import get_deq

        from .config import DEQOptions

        self.opts = cfg.deq or DEQOptions()
        two_d = len(input_shape) == 3
        Conv, Pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
        k = 3 if two_d else 5
        c = cfg.channels[0]
        self.normalize = Normalize(mean, std)
        self.inject = Conv(input_shape[0], c, k, padding=k // 2)
        self.conv = Conv(c, c, k, padding=k // 2)
        self.norm = nn.GroupNorm(min(self.opts.groups, c), c)
        with torch.no_grad():
            n_feat = Pool(2)(torch.zeros(1, c, *input_shape[1:])).numel()
        head: list[nn.Module] = [Pool(2), nn.Flatten()]
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head += [nn.Linear(n_feat, cfg.width), nn.ReLU(), nn.Linear(cfg.width, num_classes)]
        self.head = nn.Sequential(*head)
        o = self.opts
        grad = {"ift": True} if o.grad == "ift" else {"ift": False, "grad": o.phantom_steps}
        solve = dict(core="indexing", f_solver=o.solver, f_max_iter=o.max_iter, f_tol=o.tol, f_stop_mode=o.stop_mode,
                     b_solver="fixed_point_iter")
        self.deq = get_deq(**solve, b_max_iter=o.max_iter, **grad)  # training: the configured gradient
        # the attacks' implicit gradient is exact IFT whatever the training gradient (a phantom
        # gradient is a training device, not an attacker's best), its backward solve as long as the
        # unrolled gradient's (both sum the same Neumann series to unroll_steps terms)
        self.deq_attack = get_deq(**solve, b_max_iter=o.unroll_steps, ift=True)
        self.attack_grad = o.attack_grad
        self.jacobian_loss = False
        self.last_stats: dict = {}
        self.last_jac_loss = None

    def f(self, z, u):
        return self.norm(torch.relu(self.conv(z) + u))

    def _record(self, info):
        self.last_stats = {"nstep": info["nstep"].detach().float(), "residual": info["rel_lowest"].detach().float()}

    def forward(self, x):
        u = self.inject(self.normalize(x))
        z0 = torch.zeros_like(u)
        func = lambda z: self.f(z, u)  # noqa: E731
        if self.training:
            z_out, info = self.deq(func, z0)
            z = z_out[-1]
            if self.jacobian_loss:
                from torchdeq.loss import jac_reg

                z_star = z.detach().requires_grad_()
                self.last_jac_loss = jac_reg(func(z_star), z_star)
        elif not torch.is_grad_enabled() or self.attack_grad == "naive":
            z_out, info = self.deq(func, z0)  # torchdeq solves without a graph at inference
            z = z_out[-1]
            if torch.is_grad_enabled():  # naive: one step of f at the detached fixed point
                z = func(z.detach())
        elif self.attack_grad == "ift":
            # implicit differentiation through the fixed point (torchdeq builds it in train mode)
            self.deq_attack.train()
            try:
                z_out, info = self.deq_attack(func, z0)
            finally:
                self.deq_attack.eval()
            z = z_out[-1]
        else:  # unrolled: the solver's fixed point, detached, then k steps of f on the autograd tape
            with torch.no_grad():
                z_out, info = self.deq(func, z0)
            z = z_out[-1].detach()
            for _ in range(self.opts.unroll_steps):
                z = func(z)
        self._record(info)
        return self.head(z)


ARCHITECTURES["deq"] = DEQNet
