"""Train-time scenarios: transforms of the training and validation splits; the test split stays
clean and balanced unless the scenario says otherwise (spurious: the attribute is independent of the
label at test). Where a benchmark's validation split follows its test distribution, so does this
one: class-balanced under imbalance (the training split long-tailed), the attribute independent of
the label and the four groups balanced in the spurious scenario (the training split correlated).
What each split looks like, with sizes: docs/scenarios.md.

Groups: in the spurious scenario (label group, attribute); in every other scenario the label as
given to the learner (on the training and validation splits the possibly noisy label, on the test
split the true class) — what a technique trains on never comes from labels it does not see.

Each transform is a function ``(cfg, parts, C, rng) -> parts`` on numpy arrays, registered by the
scenario's ``kind``; :func:`apply_scenario` turns the result into a :class:`studylib.data.Data`.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import Clean, Imbalance, LabelNoise, SmallData, Spurious

#: Patrini et al. 2017's class-pair flips for MNIST-like digits (asymmetric noise)
ASYMMETRIC_PAIRS = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


def _stratified_fraction(y: np.ndarray, fraction: float, rng) -> np.ndarray:
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(fraction * len(idx))))
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def noisy_labels(y: np.ndarray, cfg: LabelNoise, num_classes: int, rng) -> np.ndarray:
    """Corrupt labels as ``cfg`` defines (see :class:`studylib.config.LabelNoise`)."""
    y_noisy = y.copy()
    hit = rng.random(len(y)) < cfg.rate
    if cfg.noise == "symmetric":
        if cfg.exclude_true:
            shift = rng.integers(1, num_classes, size=len(y))
            y_noisy[hit] = (y[hit] + shift[hit]) % num_classes
        else:
            y_noisy[hit] = rng.integers(0, num_classes, size=int(hit.sum()))
    else:
        for src, dst in ASYMMETRIC_PAIRS.items():
            if src < num_classes and dst < num_classes:
                y_noisy[hit & (y == src)] = dst
    return y_noisy


def imbalance_counts(counts: np.ndarray, ratio: float) -> np.ndarray:
    """Exponential long tail: class c keeps n_head · ratio^(−c/(C−1)), n_head = the smallest
    class count available (so every class can supply it)."""
    C = len(counts)
    head = counts.min()
    return np.maximum(1, np.floor(head * ratio ** (-np.arange(C) / max(1, C - 1)))).astype(int)


def add_border(x: np.ndarray, present: np.ndarray, strength: float, width: int) -> np.ndarray:
    """Set the border (2-D images) or both ends (1-D signals) to ``strength`` where ``present``."""
    x = x.copy()
    sel = x[present]
    if x.ndim == 4:
        sel[..., :width, :] = strength
        sel[..., -width:, :] = strength
        sel[..., :, :width] = strength
        sel[..., :, -width:] = strength
    else:
        sel[..., :width] = strength
        sel[..., -width:] = strength
    x[present] = sel
    return x


def balanced_attribute(label_group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A 0/1 attribute on the ⌊n/2⌋ examples of each label group's n with the smallest uniform
    draws ``u``: the attribute independent of the label and the four (label group, attribute) groups
    as equal as the counts allow (Waterbirds' validation split: the background balanced within each
    class)."""
    attr = np.zeros(len(label_group), dtype=np.int64)
    for g in (0, 1):
        idx = np.flatnonzero(label_group == g)
        attr[idx[np.argsort(u[idx], kind="stable")[:len(idx) // 2]]] = 1
    return attr


def apply_scenario(cfg, parts: dict, num_classes: int, rng: np.random.Generator):
    """Apply scenario ``cfg`` to ``parts = {"train": (x, y), "val": ..., "test": ...}``."""
    from .data import Data, Split

    C = num_classes
    out = {k: {"x": x, "y": y.copy(), "y_true": y.copy(), "group": y.copy()} for k, (x, y) in parts.items()}
    group_names = [f"class {c}" for c in range(C)]
    info: dict = {}
    if isinstance(cfg, Clean):
        description = "clean"
    elif isinstance(cfg, SmallData):
        for k in ("train", "val"):
            keep = _stratified_fraction(out[k]["y"], cfg.fraction, rng)
            out[k] = {f: v[keep] for f, v in out[k].items()}
        description = f"small data: {cfg.fraction:.0%} of the training split ({len(out['train']['y'])} examples)"
    elif isinstance(cfg, LabelNoise):
        for k in ("train", "val"):
            out[k]["y"] = noisy_labels(out[k]["y_true"], cfg, C, rng)
        flipped = float(np.mean(out["train"]["y"] != out["train"]["y_true"]))
        definition = ("drawn over the other classes" if cfg.exclude_true else "drawn over all classes")
        description = (f"{cfg.noise} label noise, rate {cfg.rate:.0%} "
                       f"({definition if cfg.noise == 'symmetric' else 'class-pair flips'}); "
                       f"{flipped:.1%} of training labels actually wrong; validation noisy too")
        info["train_noise_fraction"] = flipped
    elif isinstance(cfg, Imbalance):
        target = imbalance_counts(np.bincount(out["train"]["y"], minlength=C), cfg.ratio)
        # validation follows the test distribution, class-balanced (ImageNet-LT's balanced
        # validation set): every class keeps as many images as the rarest class has there
        val_target = np.full(C, np.bincount(out["val"]["y"], minlength=C).min())
        for k, tgt in (("train", target), ("val", val_target)):
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(out[k]["y"] == c), size=tgt[c], replace=False)
                                           for c in range(C)]))
            out[k] = {f: v[keep] for f, v in out[k].items()}
        description = (f"long-tailed classes, ratio {cfg.ratio:g} ({target.max()} → {target.min()} per class); "
                       f"balanced validation ({val_target[0]} per class) and test")
        info["train_class_counts"] = target.tolist()
    elif isinstance(cfg, Spurious):
        for k in ("train", "val", "test"):
            label_group = (out[k]["y_true"] >= C // 2).astype(np.int64)
            if k == "test":
                attr = (rng.random(len(label_group)) < 0.5).astype(np.int64)
            elif k == "val":  # as test (the border independent of the label), group-balanced:
                attr = balanced_attribute(label_group, rng.random(len(label_group)))  # half of each label group
            else:
                agree = rng.random(len(label_group)) < cfg.correlation
                attr = np.where(agree, label_group, 1 - label_group)
            out[k]["x"] = add_border(out[k]["x"], attr.astype(bool), cfg.strength, cfg.width)
            out[k]["group"] = 2 * label_group + attr
            if cfg.target == "binary":
                out[k]["y"] = label_group.copy()
                out[k]["y_true"] = label_group.copy()
        if cfg.target == "binary":
            C = 2
        group_names = [f"y{'≥' if g else '<'}{num_classes // 2}, {'border' if a else 'no border'}"
                       for g in (0, 1) for a in (0, 1)]
        val_groups = np.bincount(out["val"]["group"], minlength=4)
        description = (f"spurious border aligned with the label group in {cfg.correlation:.0%} of training "
                       f"examples, independent of it in validation (groups of {val_groups.min()}–{val_groups.max()}) "
                       f"and test; target: {cfg.target}")
    else:  # pragma: no cover - the config's discriminated union makes this unreachable
        raise ValueError(f"unknown scenario {cfg!r}")
    if not isinstance(cfg, Spurious):
        # the groups a technique trains on (Group DRO, the loop's validation worst-group accuracy)
        # are the labels the learner is given: noisy under label noise, never the clean class it does
        # not see; the test split's labels are clean, so its groups are the true classes
        for part in out.values():
            part["group"] = part["y"].copy()

    splits = {k: Split(*(torch.as_tensor(v[f]) for f in ("x", "y", "y_true", "group"))) for k, v in out.items()}
    train_x = splits["train"].x
    return Data(train=splits["train"], val=splits["val"], test=splits["test"], num_classes=C,
                n_groups=len(group_names), group_names=group_names, input_shape=tuple(train_x.shape[1:]),
                mean=float(train_x.mean()), std=float(train_x.std()), description=description, info=info)
