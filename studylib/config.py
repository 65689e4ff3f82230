"""One validated configuration for a study and for each run in it.

A *study* (one notebook) trains several *arms* (ERM and the technique's variants) over one or more
seeds; each (arm, seed) is a *run* with its own fully resolved :class:`RunConfig` and record.

A study config is merged, later wins, from:

1. the defaults of the pydantic models below,
2. ``params/<study>.yaml`` (everything but its ``profiles:`` section),
3. ``params/profiles/<profile>.yaml`` (budget and evaluation strength shared by every study),
4. the ``profiles: {<profile>: ...}`` section of ``params/<study>.yaml``,
5. a params file given with ``-f``,
6. ``-p key value`` overrides (dotted keys, YAML values: ``-p train.epochs 5``); an arm set to
   ``null`` is removed (``-p arms.trades null``).

Each run then takes, later wins: the study's settings, the technique's training defaults
(:meth:`Technique.train_defaults <studylib.techniques.base.Technique.train_defaults>`: an
adversarial technique selects on ``val_robust_acc``) for the keys the study did not set explicitly,
and the arm's own ``model`` / ``train``.

Every model forbids unknown keys; any error is reported as one line naming the field
(:class:`ConfigError`), before anything is trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import paths
from .techniques import get_technique, plugins, technique_names
from .techniques.base import refused_note

PROFILES = ("smoke", "quick", "full")
#: Seeds below this are design seeds (studies designed, settings tuned, home findings asserted in
#: tests and notebooks); seeds from it on are report seeds, fixed in advance in the quick and full
#: profiles and never looked at while choosing a setting (the rules of docs/methodology.md).
FIRST_REPORT_SEED = 1000
EMBEDDED_DATASETS = ("digits", "mnist1d")
STANDARD_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = EMBEDDED_DATASETS + STANDARD_DATASETS
ATTACKS = ("fgsm", "pgd", "apgd", "apgd_t", "square", "autoattack")
#: attacks that run at every ε on every example (their rows are their own accuracy); the others are
#: the strong attacks, run at ``eval.strong_eps`` on the examples still unbroken (studylib.robust)
CHEAP_ATTACKS = ("fgsm", "pgd")
CORRUPTIONS = ("gaussian_noise", "blur", "brightness", "contrast", "shift", "rotation")
SELECTION_RULES = ("val_acc", "val_robust_acc", "val_worst_group_acc", "val_balanced_acc", "last")


class ConfigError(ValueError):
    """A params file, profile or override that cannot make a valid config (one-line message)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# -- data and scenarios ----------------------------------------------------------------------------
class Clean(_Strict):
    """The dataset as it is."""

    kind: Literal["clean"] = "clean"


class SmallData(_Strict):
    """A stratified fraction of the training (and validation) split: the overfitting regime."""

    kind: Literal["small_data"] = "small_data"
    fraction: float = Field(0.1, gt=0, le=1)


class LabelNoise(_Strict):
    """Noisy training and validation labels; the test split stays clean.

    ``symmetric``: with probability ``rate`` the label is replaced by one drawn uniformly over *all*
    classes (the ELR / SAT convention), so the fraction actually flipped is rate·(C−1)/C (40% → 36%
    for 10 classes); ``exclude_true=True`` draws over the other classes only (flipped = rate).
    ``asymmetric``: class-pair flips with probability ``rate``: 2→7, 3→8, 5↔6, 7→1 (Patrini et al.
    2017's MNIST pairs; other labels stay).
    """

    kind: Literal["label_noise"] = "label_noise"
    rate: float = Field(0.4, ge=0, lt=1)
    noise: Literal["symmetric", "asymmetric"] = "symmetric"
    exclude_true: bool = False


class Imbalance(_Strict):
    """Long-tailed training classes, n_c = n_max · ratio^(−c/(C−1)); validation and test balanced
    (validation: as many images of every class as its rarest class has)."""

    kind: Literal["imbalance"] = "imbalance"
    ratio: float = Field(10.0, ge=1)


class Spurious(_Strict):
    """A spurious border (pixel intensity ``strength`` on the image border, or on the ends of a 1-D
    signal) present on an example with probability ``correlation`` when its label group is 1, and
    1−correlation when it is 0, in training; independent of the label in validation (on half of
    each label group: the four groups balanced) and at test (probability ½ each).
    The label group is y ≥ C/2; with ``target="binary"`` the task is that group itself.
    Groups are (label group, border): 4 groups."""

    kind: Literal["spurious"] = "spurious"
    correlation: float = Field(0.95, ge=0, le=1)
    strength: float = Field(1.0, gt=0, le=1)
    width: int = Field(1, ge=1)
    target: Literal["binary", "original"] = "binary"


Scenario = Annotated[Union[Clean, SmallData, LabelNoise, Imbalance, Spurious], Field(discriminator="kind")]
SCENARIOS = ("clean", "small_data", "label_noise", "imbalance", "spurious")


class DataConfig(_Strict):
    """Embedded datasets (digits, mnist1d) are split train/val/test by the seed. Standard datasets
    (mnist, fashion_mnist, cifar10: read from the data root, see :mod:`studylib.datasets`) keep
    their official test set; validation is ``val_fraction`` of the official training set.
    ``root`` is where they are (None: ``$STUDYLIB_DATA_ROOT``, else ``<project>/data``); it is
    not part of a run's hash, so moving the files recomputes nothing. ``augment`` is applied to
    every training batch on the run's device (GPU included): ``crop_flip`` is the CIFAR standard,
    a random crop after zero-padding by ``crop_padding`` pixels and a horizontal flip."""

    dataset: Literal["digits", "mnist1d", "mnist", "fashion_mnist", "cifar10"] = "digits"
    root: str | None = Field(None, description="data root of the standard datasets (None: $STUDYLIB_DATA_ROOT, else <project>/data)")
    scenario: Scenario = Field(default_factory=Clean)
    test_fraction: float = Field(0.25, gt=0, lt=1, description="embedded datasets only (standard ones keep their test set)")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="of the whole set (embedded) or of the official training set (standard)")
    n_train: int | None = Field(None, ge=10, description="cap on training examples (before the scenario)")
    n_val: int | None = Field(None, ge=10, description="cap on validation examples (before the scenario)")
    n_test: int | None = Field(None, ge=10, description="cap on test examples")
    augment: Literal["none", "flip", "crop_flip"] = Field("none", description="per-batch augmentation on the device (images only)")
    crop_padding: int = Field(4, ge=0, le=16, description="zero padding of crop_flip, in pixels")


# -- model, training, evaluation ---------------------------------------------------------------------
class DEQOptions(_Strict):
    """Deep equilibrium model settings (torchdeq). ``grad`` is the training gradient: implicit
    differentiation (``ift``) or phantom gradients (``phantom``, ``phantom_steps`` unrolled steps).
    ``attack_grad`` is how input gradients reach an attacker at test time: ``ift`` (exact implicit
    gradient at the fixed point, its backward solve ``unroll_steps`` iterations, whatever the
    training gradient), ``unrolled`` (backprop through ``unroll_steps`` applications of f
    started at the solver's detached fixed point) or ``naive`` (one application of f at the
    detached fixed point: a truncated gradient that ignores how z* moves with x)."""

    solver: Literal["anderson", "fixed_point_iter", "broyden"] = "anderson"
    max_iter: int = Field(30, ge=1)
    tol: float = Field(1e-3, gt=0)
    stop_mode: Literal["abs", "rel"] = "rel"
    grad: Literal["ift", "phantom"] = "ift"
    phantom_steps: int = Field(5, ge=1)
    attack_grad: Literal["ift", "unrolled", "naive"] = "ift"
    unroll_steps: int = Field(30, ge=1)
    groups: int = Field(8, ge=1, description="GroupNorm groups inside f")


class ModelConfig(_Strict):
    arch: Literal["mlp", "cnn", "deq", "preact_resnet18", "resnet9"] = "cnn"
    width: int = Field(128, ge=1, description="hidden units of the MLP layers / the CNN's dense layer")
    depth: int = Field(2, ge=1, description="hidden layers of the MLP")
    channels: tuple[int, int] = (32, 64)
    dropout: float = Field(0.0, ge=0, lt=1)
    batchnorm: bool = False
    base_width: int = Field(64, ge=1, description="channels of the first stage of preact_resnet18 / resnet9")
    deq: DEQOptions | None = Field(None, description="DEQ settings (arch deq; None: the defaults)")


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, description="L2 in the gradient for sgd/adam, decoupled for adamw")
    schedule: Literal["constant", "cosine", "multistep", "onecycle"] = "constant"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75], description="fractions of epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    select: Literal["val_acc", "val_robust_acc", "val_worst_group_acc", "val_balanced_acc", "last"] = "val_acc"
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    select_eps: float | None = Field(None, ge=0, description="ε of val_robust_acc; None: eval.main_eps")
    select_steps: int = Field(10, ge=1, description="PGD steps of val_robust_acc")
    grad_clip: float | None = Field(None, gt=0)
    track_robust: bool = Field(False, description="log PGD accuracy on fixed train and validation subsets each epoch")
    track_size: int = Field(256, ge=1, description="examples per subset for track_robust")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps in all (tests, trials)")
    sampler: Literal["uniform", "group_balanced", "class_balanced"] | None = Field(
        None, description="how training batches are drawn: uniform (a shuffled pass over the split); "
        "group_balanced / class_balanced (with replacement, each example weighted 1/n of its group / "
        "given label, as many batches per epoch as a plain pass: Group DRO's --reweight_groups); "
        "None: the technique's own default (Technique.sampler), resolved into each run's config")
    # the fast path (GPU); each also runs on CPU
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast for training steps (evaluation stays fp32)")
    channels_last: bool = Field(False, description="channels_last memory format for image models and batches (CUDA only; ignored on CPU)")
    compile: bool = Field(False, description="torch.compile the model for training steps")
    checkpoint_every: float = Field(60.0, ge=0, description="seconds between resume checkpoints, written at "
                                    "epoch ends (0: every epoch); not part of the run's hash")


class EvalConfig(_Strict):
    """The scorecard's evaluation (see :mod:`studylib.robust` for what each attack row means).

    ``fgsm`` and ``pgd`` run at every ε on every attacked example. The strong attacks — ``apgd``
    (APGD-CE), ``apgd_t`` (APGD-T), ``square`` and ``autoattack`` (the standard ensemble APGD-CE,
    APGD-T, FAB-T, Square), all from Croce & Hein's ``pyautoattack`` — run only at
    ``strong_eps`` and only on the examples no earlier attack broke."""

    eps: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    main_eps: float = Field(0.1, ge=0, description="the ε of the headline robust accuracy")
    attacks: list[Literal["fgsm", "pgd", "apgd", "apgd_t", "square", "autoattack"]] = Field(
        default_factory=lambda: ["fgsm", "pgd"])
    strong_eps: Literal["all", "main"] | list[float] = Field(
        "all", description="ε at which the strong attacks run: all (every ε of the grid), main (main_eps only) "
                           "or a list of values of the grid; fgsm and pgd always run at every ε")
    pgd_steps: int = Field(20, ge=1)
    pgd_restarts: int = Field(1, ge=1)
    apgd_steps: int = Field(100, ge=1, description="iterations of apgd and apgd_t (AutoAttack's standard: 100)")
    apgd_restarts: int = Field(1, ge=1, description="random restarts of apgd (AutoAttack's standard: 1)")
    apgd_targets: int = Field(9, ge=1, description="target classes of apgd_t (standard: 9; at most classes − 1)")
    square_queries: int = Field(1000, ge=1, description="queries of the square attack (autoattack's own Square: 5000)")
    max_examples: int | None = Field(None, ge=1, description="test examples attacked (None: all)")
    corruptions: list[Literal["gaussian_noise", "blur", "brightness", "contrast", "shift", "rotation"]] = Field(
        default_factory=lambda: list(CORRUPTIONS))
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5])
    ece_bins: int = Field(15, ge=2)
    batch_size: int = Field(512, ge=1)

    @field_validator("eps")
    @classmethod
    def _eps_nonnegative(cls, v):
        for i, e in enumerate(v):
            if e < 0:
                raise ValueError(f"ε must be ≥ 0, got {e} at position {i}")
        return sorted(set(v))

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, v):
        bad = [s for s in v if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities are 1..5, got {bad}")
        return v

    @model_validator(mode="after")
    def _strong_eps_in_grid(self):
        if isinstance(self.strong_eps, list):
            grid = set(self.eps) | {self.main_eps}
            off = [e for e in self.strong_eps if e not in grid]
            if off:
                raise ValueError(f"strong_eps: {off} not in the ε grid {sorted(grid)} (eps and main_eps)")
        return self

    def eps_grid(self) -> list[float]:
        """Every ε of the robust curve: the grid and ``main_eps``, ascending."""
        return sorted(set(self.eps) | {self.main_eps})

    def strong_eps_values(self) -> set[float]:
        """The ε at which the strong attacks run."""
        if self.strong_eps == "all":
            return set(self.eps_grid())
        if self.strong_eps == "main":
            return {self.main_eps}
        return set(self.strong_eps)


class ArmConfig(_Strict):
    """One arm of a study: a technique, its hyperparameters and optional model/train overrides."""

    technique: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    baseline: str | None = Field(None, description="the arm this arm's claim is compared with (None: the ERM arm "
                                 "with the same generic knobs, see studylib.claims)")
    role: Literal["headline", "secondary"] = Field(
        "headline", description="headline: a pre-registered claim of the report (in the false-discovery "
        "control); secondary: exploratory (a sweep point, shown uncorrected)")

    @field_validator("technique")
    @classmethod
    def _known(cls, v):
        if v not in technique_names():
            raise ValueError(f"unknown technique {v!r} (known: {', '.join(technique_names())}){refused_note(v)}")
        if get_technique(v).home_scenario not in SCENARIOS:
            raise ValueError(f"technique {v!r} declares home_scenario {get_technique(v).home_scenario!r} "
                             f"(known: {', '.join(SCENARIOS)})")
        return v

    @model_validator(mode="after")
    def _resolve_hparams(self):
        model = get_technique(self.technique).hparams_model()
        try:
            resolved = model(**self.hparams).model_dump()
        except ValidationError as e:
            raise ValueError("hparams." + _first_error(e)) from None
        object.__setattr__(self, "hparams", resolved)
        return self


class _Common(_Strict):
    study: str
    profile: Literal["smoke", "quick", "full"] = "quick"
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    deterministic: bool = True
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r} (auto, cpu, cuda, cuda:N, mps)")

    @model_validator(mode="after")
    def _compatible(self):
        if self.data.dataset == "mnist1d":
            if self.data.augment != "none":
                raise ValueError("data.augment: flips and crops need images; mnist1d is 1-D signals")
            if self.model.arch in ("preact_resnet18", "resnet9"):
                raise ValueError(f"model.arch: {self.model.arch} needs images; mnist1d is 1-D signals")
        if self.train.compile and self.model.arch == "deq":
            raise ValueError("train.compile: not supported for the deq architecture (its solver loop runs in Python)")
        return self


class RunConfig(_Common):
    """The full resolved configuration of one run (one arm, one seed)."""

    arm: str
    seed: int
    technique: str
    hparams: dict[str, Any]
    baseline: str | None = None  # what the report compares this arm with; not part of the run's hash
    role: Literal["headline", "secondary"] = "headline"  # the arm's claim in the report; not hashed either

    def hash(self) -> str:
        return config_hash(self)

    def content_hash(self) -> str:
        """The hash of what the run computes: the config less the names that only say where it
        belongs (study, arm, profile). Two studies that ask for the same run share one training
        (:meth:`studylib.records.RunRecord.twin`)."""
        return config_hash(self, names=False)


class StudyConfig(_Common):
    """A study: shared settings, the arms to compare and the seeds."""

    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    arms: dict[str, ArmConfig] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, v):
        for name in v:  # dotted overrides (-p arms.<name>.hparams...) split on dots
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"arm name {name!r} may hold only letters, digits, _ and -")
        return v

    @model_validator(mode="after")
    def _arms_resolve(self):
        for name, arm in self.arms.items():
            if arm.baseline is not None and arm.baseline not in self.arms:
                raise ValueError(f"arms.{name}.baseline: no arm {arm.baseline!r} in this study")
        for name in self.arms:  # fail here, naming the arm, rather than when the arm is trained
            try:
                self.run_config(name, self.seeds[0])
            except ValidationError as e:
                raise ValueError(f"arms.{name}." + _first_error(e)) from None
        return self

    def run_config(self, arm: str, seed: int) -> RunConfig:
        a = self.arms[arm]
        technique = get_technique(a.technique)
        base = self.model_dump(exclude={"arms", "seeds"})
        base["model"] = _deep_merge(base["model"], a.model)
        base["model"] = _deep_merge(base["model"], technique.model_overrides(a.hparams))
        # the technique's training defaults (adversarial techniques: train.select val_robust_acc)
        # yield to a value the study sets explicitly (params file, profile, -p) and to the arm's own
        defaults = {k: v for k, v in technique.train_defaults(a.hparams).items()
                    if k not in self.train.model_fields_set}
        base["train"] = _deep_merge(base["train"], defaults)
        base["train"] = _deep_merge(base["train"], a.train)
        if base["train"].get("sampler") is None:  # the run's record names the sampler it used
            base["train"]["sampler"] = get_technique(a.technique).sampler
        return RunConfig(**base, arm=arm, seed=seed, technique=a.technique, hparams=a.hparams, baseline=a.baseline,
                         role=a.role)

    def runs(self) -> list[RunConfig]:
        return [self.run_config(arm, seed) for seed in self.seeds for arm in self.arms]

    @property
    def design_seeds(self) -> bool:
        """True when every seed is a design seed: home findings may be asserted on these runs (on
        report seeds a notebook states the verdict instead)."""
        return all(s < FIRST_REPORT_SEED for s in self.seeds)

    def hash(self) -> str:
        return config_hash(self)


# -- loading -------------------------------------------------------------------------------------
def config_hash(cfg: BaseModel, names: bool = True) -> str:
    """A short stable hash of the full resolved config (canonical JSON), without ``data.root``
    (where the files sit does not change a result), ``train.checkpoint_every`` (nor does how often
    a run saves its progress) and an arm's ``baseline`` and ``role`` (how the
    report reads a result does not either); ``names=False`` leaves out the study, arm and profile
    names too."""
    dump = cfg.model_dump(mode="json", exclude={"data": {"root"}, "train": {"checkpoint_every"}})
    for key in ("baseline", "role") if names else ("baseline", "role", "study", "arm", "profile"):
        dump.pop(key, None)
    text = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _first_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"] if not (isinstance(x, str) and x in SCENARIOS))
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "value_error") or isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return "; ".join(parts)


def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        # a tagged mapping (a scenario) of another kind replaces the old one instead of merging
        same_kind = not (isinstance(v, dict) and isinstance(out.get(k), dict) and "kind" in v
                         and v["kind"] != out[k].get("kind"))
        if isinstance(v, dict) and isinstance(out.get(k), dict) and same_kind:
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML itself keeps the last
    silently, which once dropped a study's attack list)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what}: {path}{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def parse_overrides(pairs) -> dict:
    """``[("train.epochs", "5"), ...]`` or ``{"train.epochs": 5}`` → nested dict (YAML values)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    out: dict = {}
    for key, value in items or ():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"override {key}: cannot parse value {value!r}") from None
        node = out
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"override {key!r}: empty key part")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is set to a value and to a mapping")
        node[parts[-1]] = value
    return out


def study_names() -> list[str]:
    return sorted(p.stem for p in paths.params_dir().glob("*.yaml"))


def load_study(study: str, profile: str | None = None, overrides=None,
               params_file: str | os.PathLike | None = None) -> StudyConfig:
    """Build the validated :class:`StudyConfig` of ``study`` (see the module docstring for the
    merge order). ``profile=None`` takes ``$STUDYLIB_PROFILE``, else ``quick``."""
    profile = profile or os.environ.get("STUDYLIB_PROFILE") or "quick"
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    study_file = paths.params_dir() / f"{study}.yaml"
    if not study_file.exists():
        raise ConfigError(f"study: unknown study {study!r}: no {study_file} (known: {', '.join(study_names())})")
    raw = _read_yaml(study_file, f"study {study}")
    study_profiles = raw.pop("profiles", {}) or {}
    if not isinstance(study_profiles, dict) or set(study_profiles) - set(PROFILES):
        raise ConfigError(f"profiles: {study_file} may only have sections {', '.join(PROFILES)}")
    _load_plugins(raw, study_file)
    merged = _deep_merge({"study": study}, raw)
    merged = _deep_merge(merged, _read_yaml(paths.params_dir() / "profiles" / f"{profile}.yaml", f"profile {profile}"))
    merged = _deep_merge(merged, study_profiles.get(profile) or {})
    if params_file is not None:
        extra = _read_yaml(Path(params_file), "params file")
        _load_plugins(extra, Path(params_file))
        merged = _deep_merge(merged, extra)
    parsed = parse_overrides(overrides)
    _load_plugins(parsed, None)
    merged = _deep_merge(merged, parsed)
    merged["profile"] = profile
    if isinstance(merged.get("arms"), dict):  # an arm set to null is removed (-p arms.trades null)
        merged["arms"] = {k: v for k, v in merged["arms"].items() if v is not None}
    return build_study(merged)


def _load_plugins(raw: dict, source: Path | None) -> None:
    """Load (and remove from ``raw``) a params file's top-level ``plugins:`` list: modules or
    ``.py`` files of techniques (:mod:`studylib.techniques.plugins`), paths relative to the file's
    folder (to the working directory for ``-p plugins``). A refused plugin is a ConfigError."""
    specs = raw.pop("plugins", None)
    if specs is None:
        return
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise ConfigError(f"plugins: a list of module names or .py files{f' (in {source})' if source else ''}")
    for spec in specs:
        try:
            plugins.load(spec, source.parent.resolve() if source else None, "params file")
        except plugins.PluginError as e:
            raise ConfigError(f"plugins: {e}") from None


def build_study(data: dict) -> StudyConfig:
    """Validate a plain dict into a :class:`StudyConfig`, raising :class:`ConfigError`."""
    try:
        return StudyConfig(**data)
    except ValidationError as e:
        raise ConfigError(_first_error(e)) from None


def check_params_file(path: str | os.PathLike, profile: str | None = None) -> StudyConfig:
    """Validate a params file: a study's own file (``params/<study>.yaml``) or a file of
    overrides naming its ``study:``."""
    path = Path(path)
    raw = _read_yaml(path, "params file")
    study = raw.get("study") or path.stem
    if path.resolve() == (paths.params_dir() / f"{study}.yaml").resolve():
        cfgs = [load_study(study, p) for p in ([profile] if profile else PROFILES)]
        return cfgs[-1]
    return load_study(study, profile, params_file=path)
