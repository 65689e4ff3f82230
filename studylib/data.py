"""Embedded datasets, fixed splits and batches.

* ``digits``: scikit-learn's ``load_digits`` — 1797 8×8 images, 10 classes, ships with the package.
* ``mnist1d``: ``mnist1d``'s procedural generator (Greydanus 2020), offline — 5000 signals of
  length 40, 10 classes; rescaled to [0, 1] by the generated set's min and max.

Standard datasets, read from the data root by :mod:`studylib.datasets` (numpy, no torchvision):

* ``mnist``, ``fashion_mnist``: 60 000 + 10 000 28×28 grey images; ``cifar10``: 50 000 + 10 000
  32×32 colour images. The official test set is the test split; validation is a stratified share
  of the official training set, fixed by the seed.

Inputs are float32 in [0, 1] with a channel axis: (N, 1, 8, 8), (N, 1, 40), (N, 1, 28, 28) or
(N, 3, 32, 32). Embedded sets are split train / validation / test, stratified and fixed by the
seed; the scenario (:mod:`studylib.scenarios`) then transforms the training and validation splits.
Every split lives on the run's device as one tensor (CIFAR-10's training set is 0.6 GB in float32)
and is batched by indexing: no DataLoader, no worker processes, no host-to-device copies per batch;
augmentation (:func:`augment`) runs on the device too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from .config import DataConfig


class Batch(NamedTuple):
    """One mini-batch: inputs, (possibly noisy) labels, example indices into the split, groups."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    group: torch.Tensor


@dataclass
class Split:
    """One split as tensors. ``y`` is the label the learner sees (noisy under label noise);
    ``y_true`` the clean label; ``group`` the group: in the spurious scenario the
    (label group, spurious attribute) pair; otherwise the label as given — on the training and
    validation splits the label the learner sees (noisy under label noise: a technique never learns
    the clean labels through its groups), on the test split the true class (the evaluation group)."""

    x: torch.Tensor
    y: torch.Tensor
    y_true: torch.Tensor
    group: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.x[index], self.y[index], self.y_true[index], self.group[index])

    def to(self, device) -> "Split":
        return Split(*(t.to(device) for t in (self.x, self.y, self.y_true, self.group)))

    @property
    def noisy(self) -> torch.Tensor:
        """Mask of examples whose given label differs from the true one."""
        return self.y != self.y_true


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    num_classes: int
    n_groups: int
    group_names: list[str]
    input_shape: tuple[int, ...]
    mean: float
    std: float
    description: str = ""
    info: dict = field(default_factory=dict)

    def to(self, device) -> "Data":
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


@functools.lru_cache(maxsize=4)
def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole embedded dataset as (x float32 in [0,1] with a channel axis, y int64)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]
        return x, d.target.astype(np.int64)
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())  # procedural, seed fixed by the package's defaults
        x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
        y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
        # min-max over the whole generated set (fixed: the generator's seed is fixed), so ε is in
        # units of the signal's full range
        x = ((x - x.min()) / (x.max() - x.min()))[:, None]
        return x, y
    raise ValueError(f"unknown dataset {name!r}")


@functools.lru_cache(maxsize=2)
def load_standard(name: str, root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of a standard dataset, x float32 in [0, 1]."""
    from . import datasets

    xtr, ytr, xte, yte = datasets.load(name, root)
    return (xtr.astype(np.float32) / 255.0, ytr, xte.astype(np.float32) / 255.0, yte)


def check_available(cfg: DataConfig, read: bool = True) -> None:
    """Raise :class:`studylib.datasets.DataError` (one line: the missing, truncated or corrupt file
    and how to get it) unless ``cfg.dataset`` can be read; embedded datasets always can.
    ``read=True`` (``Study.run``, before its first run) reads the files, catching truncated or
    corrupt ones, and keeps them for :func:`make_data` in this process; ``read=False`` (the CLI and
    sweep validation, in processes that never train) only checks that every file is there."""
    from .config import STANDARD_DATASETS

    if cfg.dataset in STANDARD_DATASETS:
        from . import datasets

        if read:
            load_standard(cfg.dataset, str(datasets.data_root(cfg.root)))
        elif datasets.status(cfg.dataset, cfg.root) != "present":
            datasets.load(cfg.dataset, cfg.root)  # raises, naming the first missing file


def split_indices(y: np.ndarray, test_fraction: float, val_fraction: float, seed: int):
    """Stratified (train, val, test) index arrays, fixed by ``seed``."""
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed + 1)
    return np.sort(train), np.sort(val), np.sort(test)


def make_data(cfg: DataConfig, seed: int) -> Data:
    """Load ``cfg.dataset``, split it by ``seed`` and apply ``cfg.scenario`` (CPU tensors)."""
    from .scenarios import apply_scenario

    from .config import STANDARD_DATASETS

    if cfg.dataset in STANDARD_DATASETS:
        from . import datasets

        xtr, ytr, xte, yte = load_standard(cfg.dataset, str(datasets.data_root(cfg.root)))
        x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
        te = np.arange(len(ytr), len(y))
        tr, va = train_test_split(np.arange(len(ytr)), test_size=cfg.val_fraction, stratify=ytr, random_state=seed)
        tr, va = np.sort(tr), np.sort(va)
    else:
        x, y = load_raw(cfg.dataset)
        tr, va, te = split_indices(y, cfg.test_fraction, cfg.val_fraction, seed)
    rng = np.random.default_rng(seed)

    def capped(idx, cap):
        if cap is None or cap >= len(idx):
            return idx
        return np.sort(train_test_split(idx, train_size=cap, stratify=y[idx], random_state=seed)[0])

    tr, va, te = capped(tr, cfg.n_train), capped(va, cfg.n_val), capped(te, cfg.n_test)
    parts = {name: (x[i], y[i]) for name, i in (("train", tr), ("val", va), ("test", te))}
    return apply_scenario(cfg.scenario, parts, num_classes=int(y.max()) + 1, rng=rng)


SAMPLERS = ("uniform", "group_balanced", "class_balanced")


def sampling_weights(split: Split, sampler: str, index: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-example draw weights (CPU, float64) of a balanced ``sampler`` over the examples ``index``
    (positions in ``split``; default all): 1/n_g of the example's group (``group_balanced``) or
    1/n_c of its given label (``class_balanced``), n counted over those examples, so every group
    (class) present is equally likely at each draw. ``uniform``: None."""
    if sampler == "uniform":
        return None
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    keys = (split.group if sampler == "group_balanced" else split.y).cpu()
    if index is not None:
        keys = keys[index.cpu()]
    return 1.0 / torch.bincount(keys)[keys].double()


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None,
            shuffle: bool = True, sampler: str = "uniform",
            index: torch.Tensor | None = None) -> Iterator[Batch]:
    """Mini-batches of ``split`` by indexing device tensors (the last batch may be smaller), drawn
    from the examples ``index`` (positions in ``split``; default all; ``batch.idx`` is always a
    position in ``split``).

    ``sampler="uniform"``: a permutation of the examples (one pass over each, the shuffled order
    from ``generator``). ``group_balanced`` / ``class_balanced``: as many examples as a pass, drawn
    *with replacement* by ``torch.multinomial`` with weights 1/n of the example's group / given label
    (:func:`sampling_weights`), so each group (class) is equally likely per draw — Group DRO's
    ``--reweight_groups`` (kohpangwei/group_DRO: a ``WeightedRandomSampler`` with weights 1/n_g,
    ``len(train_data)`` draws per epoch, i.e. as many batches as a plain epoch). The draws come from
    ``generator`` (a CPU generator, like the permutation): the same seed gives the same batches on any
    device; only the drawn indices move to the split's device."""
    n = len(split) if index is None else len(index)
    weights = sampling_weights(split, sampler, index)
    if weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    elif shuffle:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    if index is not None:
        order = index.cpu()[order]
    order = order.to(split.x.device)
    for start in range(0, n, batch_size):
        i = order[start:start + batch_size]
        yield Batch(split.x[i], split.y[i], i, split.group[i])


def augment(x: torch.Tensor, kind: str, padding: int = 4) -> torch.Tensor:
    """Per-example random augmentation of an image batch on its own device (the global RNG of that
    device, seeded by the run): ``flip`` mirrors left-right with probability ½; ``crop_flip`` also
    takes a random crop of the original size after zero-padding by ``padding`` pixels (the CIFAR
    standard, as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip). One gather, no
    Python loop over examples."""
    if kind == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"data.augment: {kind} needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    dev = x.device
    if kind == "crop_flip" and padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy, dx = torch.randint(0, 2 * padding + 1, (2, n), device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
    flip = torch.rand(n, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)
