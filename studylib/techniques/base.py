"""The technique interface and its registry.

A technique is one file that plugs into the shared training loop (:mod:`studylib.train`) through a
few hooks; the loop owns seeding, the optimizer, the schedule, model selection and logging.

Hooks (all optional; the default is ERM):

* ``epoch_start(epoch)``                 called before each epoch (1-based); stores ``self.epoch``
* ``loss(model, batch) -> Tensor``       the scalar training loss for one batch (default: cross-entropy);
                                         ``batch`` carries x, y, the example index and the group
* ``penalty(model) -> Tensor | None``    a term added to the loss (L1/L2 penalties)
* ``epoch_end(model, epoch) -> dict``    per-epoch diagnostics (numbers), stored in the history
* ``diagnostics() -> dict``              final diagnostics, stored in the run's ``metrics.json``
* ``score(model, data) -> dict``         extra test-time numbers for the scorecard (e.g. MC-dropout
                                         ECE, DEQ solver statistics), merged into the metrics
* ``model_overrides(hp) -> dict``        (classmethod) model-config values the technique sets, e.g.
                                         the dropout rate; applied when the run config is resolved
* ``state_dict() / load_state_dict(d)``  the technique's state across epochs, for a run's resume
                                         checkpoint (default: the attributes named in ``state``;
                                         none for a stateless technique)
* ``trained_corruptions(hp) -> tuple``   (classmethod) the scorecard's test-time corruptions
                                         (:data:`studylib.config.CORRUPTIONS`) the technique trains
                                         on (default none): kept out of ``corruption_acc_heldout``
* ``first_fit(cfg) -> RunConfig | None`` (classmethod) a run the loop fits first, on the same data,
                                         before the run itself (two-stage methods: JTT's first
                                         model); its FitResult is ``ctx.first``, its training time
                                         counts in the run's. Default: None
* ``train_index() -> Tensor | None``     the training examples the loop may take gradient steps on
                                         (None: all); e.g. a slice the technique holds out to measure
                                         its own signal on (CW-ERM's adaptive rule)

The class attribute ``sampler`` is how the technique's training batches are drawn unless the run
config says otherwise (``train.sampler``): ``uniform`` (a shuffled pass over the training split),
``group_balanced`` or ``class_balanced`` (with replacement, each example weighted 1/n of its group
or class; see :func:`studylib.data.batches`).
* ``train_defaults(hp) -> dict``         (classmethod) train-config defaults of the technique's runs,
                                         under what the study sets explicitly and the arm's ``train``
                                         (adversarial techniques: ``select: val_robust_acc``)
* ``eval_attacks(model, eval_cfg)``      extra attacks for the scorecard's robust accuracy, run on
                                         the same examples and included in the per-example worst
                                         case (DEQ: PGD with each solver gradient, Square)

Hyperparameters are declared as :class:`Param` — a default *and* a search range side by side, as in
DomainBed — and validated by a pydantic model built from them (unknown names are refused).

Runs that differ only in their selection rule share one fit (:func:`studylib.train.trajectory_key`):
one technique object trains for all of them (its ``diagnostics`` are theirs alike), and its
``score`` and ``eval_attacks`` are called for each selected model in turn. So the training hooks must not read
``train.select`` (or its PGD settings) from ``ctx.config``, and ``score`` and ``eval_attacks`` must
not carry state from one call to the next. Random draws outside the training steps go through a
forked, seeded RNG (:func:`studylib.attacks.fork_rng`), as the built-in checks do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from .._lazy import lazy_import

# imported on first use: the technique registry (config validation, `studylib list`) needs no torch
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default, its search range and its validity bounds.

    ``low``/``high`` bound the *search* range used by random sweeps (log-uniform when ``log``);
    ``ge``/``le``/``gt``/``lt`` bound *validity* and are enforced when a config is loaded.
    ``choices`` makes the parameter categorical.
    """

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    type: Any = None  # inferred from the default when None

    def python_type(self):
        if self.type is not None:
            return self.type
        if self.choices is not None:
            from typing import Literal

            return Literal[self.choices]  # type: ignore[valid-type]
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, int):
            return int
        if isinstance(self.default, float):
            return float
        return type(self.default)

    def sample(self, rng: np.random.Generator):
        """Draw a value from the search range (used by random sweeps)."""
        if self.choices is not None:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.low is None or self.high is None:
            return self.default
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.python_type() is int else float(value)

    def describe(self) -> str:
        if self.choices is not None:
            rng = "{" + ", ".join(map(str, self.choices)) + "}"
        elif self.low is not None:
            rng = f"{'log-' if self.log else ''}[{self.low:g}, {self.high:g}]"
        else:
            rng = "fixed"
        return f"{self.default!r} (search {rng}) — {self.help}"


class Technique:
    """Base class: plain empirical risk minimisation (cross-entropy).

    Subclasses set ``name``, ``summary``, ``params`` and override the hooks they need.
    ``self.hp`` holds the validated hyperparameters; ``self.ctx`` the run context
    (number of training examples and classes, epochs, device, data statistics).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    #: whether the technique trains against an attack (its runs select on robust validation
    #: accuracy unless the study or the arm sets ``train.select``: see ``train_defaults``)
    adversarial: ClassVar[bool] = False
    #: the scenario the technique was made for and the scorecard metric its claim is about
    #: (the synthesis report's headline for the technique)
    home_scenario: ClassVar[str] = "clean"
    home_metric: ClassVar[str] = "clean_acc"
    #: the batch sampler this technique trains with when ``train.sampler`` is None (its published
    #: recipe): "uniform", "group_balanced" or "class_balanced"
    sampler: ClassVar[str] = "uniform"
    #: the attributes that carry the technique's state from one epoch to the next (tensors or
    #: numbers: ELR's target estimates, Group DRO's q, ...), saved in a run's resume checkpoint
    state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, hp: BaseModel, ctx: "RunContext"):
        self.hp = hp
        self.ctx = ctx

    epoch: int = 0

    # -- hooks -------------------------------------------------------------------------------
    @classmethod
    def model_overrides(cls, hp: dict) -> dict:
        return {}

    @classmethod
    def train_defaults(cls, hp: dict) -> dict:
        """Train-config values the technique's runs take unless the study sets them explicitly or
        the arm overrides them: an adversarial technique keeps the epoch of best robust validation
        accuracy (early stopping against robust overfitting, Rice et al. 2020)."""
        return {"select": "val_robust_acc"} if cls.adversarial else {}

    @classmethod
    def trained_corruptions(cls, hp: dict) -> tuple[str, ...]:
        """The scorecard's corruptions this technique trains on with hyperparameters ``hp`` (as
        given: missing keys take their defaults). The scorecard keeps them out of
        ``corruption_acc_heldout`` (test corruptions held out of training, Hendrycks & Dietterich
        2019). Default: none."""
        return ()

    @classmethod
    def first_fit(cls, cfg) -> Any:
        """The RunConfig of a fit the loop runs before this one on the same data (its
        :class:`studylib.train.FitResult` becomes ``ctx.first``), or None (default)."""
        return None

    def eval_attacks(self, model: torch.nn.Module, eval_cfg) -> list:
        """Extra :class:`studylib.robust.AttackSpec` s for the scorecard (default: none)."""
        return []

    def epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(model(batch.x), batch.y)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        return None

    def train_index(self) -> torch.Tensor | None:
        return None

    def epoch_end(self, model: torch.nn.Module, epoch: int) -> dict:
        return {}

    def diagnostics(self) -> dict:
        return {}

    def score(self, model: torch.nn.Module, data) -> dict:
        return {}

    def state_dict(self) -> dict:
        """What a resumed run needs to continue as if it had never stopped (checkpointed at epoch
        ends): the attributes named in ``state`` (tensors, numbers, lists of them)."""
        return {name: getattr(self, name) for name in self.state}

    def load_state_dict(self, state: dict) -> None:
        for name in self.state:
            setattr(self, name, state[name])

    # -- hyperparameters ---------------------------------------------------------------------
    @classmethod
    def hparams_model(cls) -> type[BaseModel]:
        cached = cls.__dict__.get("_hparams_model")
        if cached is not None:
            return cached
        fields = {}
        for key, p in cls.params.items():
            bounds = {k: getattr(p, k) for k in ("ge", "le", "gt", "lt") if getattr(p, k) is not None}
            fields[key] = (p.python_type(), Field(p.default, description=p.help, **bounds))
        model = create_model(
            f"{cls.__name__}Hparams", __config__=ConfigDict(extra="forbid", frozen=True), **fields
        )
        cls._hparams_model = model
        return model

    @classmethod
    def defaults(cls) -> dict:
        return {k: p.default for k, p in cls.params.items()}

    @classmethod
    def sample_hparams(cls, seed: int) -> dict:
        """Random draw from the search ranges; each parameter has its own generator, seeded by an
        MD5 hash of (seed, technique, name) (DomainBed's ``seed_hash``): the parameters of one draw
        are independent, and adding a parameter does not shift the others."""
        return {key: p.sample(np.random.default_rng(seed_hash(seed, cls.name, key))) for key, p in cls.params.items()}


def seed_hash(*parts) -> int:
    """A 63-bit integer from the MD5 digest of ``parts`` (every byte of every part counts)."""
    import hashlib

    return int(hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest(), 16) % (2**63)


@dataclass
class RunContext:
    """What a technique may know about the run it is part of."""

    n_train: int
    num_classes: int
    n_groups: int
    epochs: int
    device: torch.device
    class_counts: torch.Tensor  # training examples per class (given labels)
    group_counts: torch.Tensor  # training examples per group (groups as given to the learner)
    train: Any = None  # the training split (studylib.data.Split), for techniques that probe it
    val: Any = None
    config: Any = None  # the run's RunConfig (e.g. eval.main_eps for a technique's own probes)
    first: Any = None  # the FitResult of the technique's first fit (Technique.first_fit), if any


_REGISTRY: dict[str, type[Technique]] = {}


def undeclared(cls: type[Technique]) -> list[str]:
    """The claim attributes (``home_scenario``, ``home_metric``) that ``cls`` takes from the base
    class instead of declaring them (on itself or a technique it derives from): without them a
    claim would quietly be about clean accuracy on clean data. Only ERM, the baseline, needs none."""
    if cls.name == "erm":
        return []
    return [attr for attr in ("home_scenario", "home_metric")
            if next(k for k in cls.__mro__ if attr in vars(k)) is Technique]


def register(cls: type[Technique]) -> type[Technique]:
    """Class decorator: add a technique to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"technique {cls.name!r} is registered twice ({_REGISTRY[cls.name].__module__} "
                         f"and {cls.__module__})")
    missing = undeclared(cls)
    if missing:
        raise ValueError(f"technique {cls.name!r} ({cls.__module__}) does not declare {' and '.join(missing)} "
                         "(the scenario it was made for and the scorecard metric its claim is about)")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a technique (a plugin refused after it registered)."""
    _REGISTRY.pop(name, None)


def get_technique(name: str) -> type[Technique]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown technique {name!r}; known: {', '.join(sorted(_REGISTRY))}{refused_note(name)}") from None


def technique_names() -> list[str]:
    return sorted(_REGISTRY)


#: plugins refused (``studylib.techniques.plugins``): what was named → the one-line reason
REFUSED: dict[str, str] = {}


def refused_note(name: str) -> str:
    """For an unknown technique's error: the refused plugins, in case one of them was meant."""
    if not REFUSED:
        return ""
    return " (refused plugins: " + "; ".join(f"{k}: {v}" for k, v in REFUSED.items()) + ")"
