"""The one training loop every technique shares.

The loop owns seeding, device placement, how batches are drawn (``train.sampler``, else the
technique's own sampler: a shuffled pass, or group- / class-balanced draws with replacement), the
optimizer and its schedule, per-epoch validation, model selection / early stopping on the validation
split (never the test split), the per-epoch history and the progress bar. Techniques only supply
their hooks (:mod:`studylib.techniques.base`).
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import attacks, checkpoint as ckpt, kernels
from .config import RunConfig, TrainConfig, config_hash
from .data import Data, augment, batches
from .metrics import accuracy_metrics
from .models import build_model
from .techniques import RunContext, get_technique


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → cuda if available, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


def seed_everything(seed: int, deterministic: bool = True, device: torch.device | None = None) -> None:
    """Seed Python, NumPy and torch; choose the cuDNN / TF32 / determinism settings of this run (at
    run start, never at import). ``deterministic=False`` is the fast path: cuDNN autotuning and
    TF32 matrix products on CUDA, non-deterministic kernels allowed (seeds still fix data order
    and initialisation); ``True`` gives bitwise-repeatable runs on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device is not None and device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _deterministic_algorithms(deterministic)


def _deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` without its first-call cost:
    the public call imports ``torch._inductor`` (≈1 s, in every notebook kernel and sweep worker)
    just to set inductor's own flag, which matters only to ``torch.compile`` — set it when inductor
    is loaded (compiling loads it first)."""
    import sys

    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD and Adam add ``weight_decay·w`` to the gradient (L2 in the loss); AdamW decays the
    weights directly (decoupled, Loshchilov & Hutter 2019) — distinct options on purpose."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler or None, steps per batch?)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch), True
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch), True
    if cfg.schedule == "multistep":
        milestones = sorted({max(1, int(round(m * cfg.epochs))) for m in cfg.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.gamma), False
    return None, False


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[dict]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    selection_rule: str
    stopped_early: bool
    technique: object = None
    diagnostics: dict = field(default_factory=dict)
    sampler: str = "uniform"
    trained_examples: int | None = None  # examples gradient steps were drawn from (None: the whole split)
    val_seconds: float = 0.0  # per-epoch validation, selection attacks and diagnostics (not training)
    siblings: list["FitResult"] = field(default_factory=list)  # the same fit's other selection rules (fit(siblings=))

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / max(1, self.epochs_run)


def resolve_sampler(cfg: RunConfig) -> str:
    """The batch sampler of a run: ``train.sampler``, else the technique's own default (a config
    resolved by :meth:`StudyConfig.run_config` already names it)."""
    return cfg.train.sampler or get_technique(cfg.technique).sampler


def selection_rule(cfg: RunConfig) -> str:
    t = cfg.train
    if t.select == "last":
        return "last epoch"
    extra = f" (PGD-{t.select_steps}, ε={select_eps(cfg):g})" if t.select == "val_robust_acc" else ""
    stop = f", early stop after {t.patience} epochs without improvement" if t.patience else ""
    return f"epoch of best {t.select}{extra} on the validation split{stop}"


def trajectory_key(cfg: RunConfig) -> str | None:
    """What a run's training depends on: its config less the names and the selection rule
    (``train.select`` and the PGD of ``val_robust_acc``: validation is computed on the side, its
    attacks on their own RNG). Runs of one seed with equal keys train the same weights epoch by epoch
    and differ only in the epoch each keeps, so one fit serves them all (:func:`fit`'s ``siblings``).
    None where the rule changes the training itself: early stopping (``train.patience``) ends it, and a
    two-stage technique's first fit is a run of its own."""
    if cfg.train.patience is not None or get_technique(cfg.technique).first_fit(cfg) is not None:
        return None
    neutral = cfg.train.model_copy(update={"select": "last", "select_steps": 1, "select_eps": None})
    return config_hash(cfg.model_copy(update={"train": neutral}), names=False)


def _validation_key(cfg: RunConfig) -> tuple:
    """What, beyond the training, a run's per-epoch validation depends on: the robust selection's
    attack (and ``track_robust``'s, the same for every member of a fit)."""
    robust = cfg.train.select == "val_robust_acc"
    return (robust, select_eps(cfg), cfg.train.select_steps) if robust or cfg.train.track_robust else (False,)


def select_eps(cfg: RunConfig) -> float:
    return cfg.train.select_eps if cfg.train.select_eps is not None else cfg.eval.main_eps


@torch.no_grad()
def _fit_fractions(model, split) -> dict:
    """Label-noise memorisation: the share of noisy-labelled training examples predicted as their
    given (wrong) label, and of clean ones predicted correctly."""
    noisy = split.noisy
    if not bool(noisy.any()):
        return {}
    pred = attacks.predict(model, split.x).argmax(1)
    fits = pred == split.y
    return {"train_noisy_fit": fits[noisy].float().mean().item(),
            "train_noisy_true": (pred == split.y_true)[noisy].float().mean().item(),
            "train_clean_fit": fits[~noisy].float().mean().item()}


def validate(model, data: Data, cfg: RunConfig) -> dict:
    """Validation metrics of one epoch (on the validation split as given: noisy if the scenario
    makes it so)."""
    val = data.val
    logits = attacks.predict(model, val.x)
    m = accuracy_metrics(logits, val.y, val.group, data.num_classes, data.n_groups)
    out = {"val_loss": F.cross_entropy(logits, val.y).item(), "val_acc": m["acc"],
           "val_balanced_acc": m["balanced_acc"], "val_worst_group_acc": m["worst_group_acc"]}
    if data.n_groups <= 16:
        out.update({f"val_group_acc_{g}": a for g, a in enumerate(m["group_acc"]) if a is not None})
    if cfg.train.select == "val_robust_acc" or cfg.train.track_robust:
        out["val_robust_acc"] = _pgd_acc(model, val, cfg, None if cfg.train.select == "val_robust_acc" else cfg.train.track_size)
    if cfg.train.track_robust:
        out["train_robust_acc"] = _pgd_acc(model, data.train, cfg, cfg.train.track_size)
        out["train_clean_acc"] = attacks.predict(model, data.train.x[:cfg.train.track_size]).argmax(1).eq(
            data.train.y[:cfg.train.track_size]).float().mean().item()
    return out


def _pgd_acc(model, split, cfg: RunConfig, size: int | None) -> float:
    """PGD accuracy at the selection ε on the first ``size`` examples of ``split`` (a fixed
    subset: the splits are already shuffled), with its own RNG so training is not perturbed."""
    x, y = (split.x, split.y) if size is None else (split.x[:size], split.y[:size])
    with attacks.fork_rng(x.device):
        torch.manual_seed(0)
        x_adv = attacks.batched_attack(attacks.pgd, model, x, y, select_eps(cfg), steps=cfg.train.select_steps)
    return attacks.predict(model, x_adv).argmax(1).eq(y).float().mean().item()


def fit(cfg: RunConfig, data: Data, progress: bool = True, checkpoint=None, siblings=()) -> FitResult:
    """Train ``cfg.technique`` on ``data`` (already on the run's device) and return the model
    selected by ``cfg.train.select`` with its per-epoch history. With ``checkpoint`` (a path), the
    run continues from the checkpoint there if one of this run is (:mod:`studylib.checkpoint`) and
    writes one at epoch ends, at most every ``train.checkpoint_every`` seconds; the caller removes
    it once the run's record is done.

    ``siblings``: runs of the same seed and :func:`trajectory_key` (another selection rule for the
    same training), selected in the same fit: ``result.siblings`` holds one result each, with its own
    history (its own validation metrics), selected epoch and model, exactly as each would get alone.
    Their costs are each the whole fit's, as they would be alone."""
    members = [cfg, *siblings]
    if siblings and (trajectory_key(cfg) is None or any(trajectory_key(c) != trajectory_key(cfg) or c.seed != cfg.seed
                                                        for c in siblings)):
        raise ValueError(f"{cfg.arm}: runs that train differently cannot share a fit: "
                         f"{', '.join(c.arm for c in siblings)}")
    technique_cls = get_technique(cfg.technique)
    first_cfg = technique_cls.first_fit(cfg)  # a two-stage technique's first fit, on the same data
    first = fit(first_cfg, data, progress) if first_cfg is not None else None
    device = data.train.x.device
    kernels.use(device)  # the pinned CPU kernels, or one error before training
    seed_everything(cfg.seed, cfg.deterministic, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes, data.mean, data.std).to(device)
    # channels_last on CUDA only: on CPU it sped a ResNet-9 up by about a third in a trial, but torch
    # 2.13's CPU kernels corrupted memory on a narrow PreActResNet-18 (width 8, batch 3) in it
    channels_last = cfg.train.channels_last and len(data.input_shape) == 3 and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the module the training steps call: compiled when asked (the plain one keeps the state dict,
    # validation and the scorecard, so evaluation never waits on a recompile)
    if cfg.train.compile:  # the public call, which sets inductor's determinism flag too
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    step_model = torch.compile(model) if cfg.train.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    ctx = RunContext(n_train=len(data.train), num_classes=data.num_classes, n_groups=data.n_groups,
                     epochs=cfg.train.epochs, device=device,
                     class_counts=torch.bincount(data.train.y, minlength=data.num_classes),
                     group_counts=torch.bincount(data.train.group, minlength=data.n_groups),
                     train=data.train, val=data.val, config=cfg, first=first)
    technique = technique_cls(technique_cls.hparams_model()(**cfg.hparams), ctx)
    opt = make_optimizer(model.parameters(), cfg.train)
    sampler = resolve_sampler(cfg)
    train_index = technique.train_index()  # None: every training example takes gradient steps
    if train_index is not None:
        train_index = torch.as_tensor(train_index, dtype=torch.long).cpu()
    n_steps_from = len(data.train) if train_index is None else len(train_index)
    steps_per_epoch = -(-n_steps_from // cfg.train.batch_size)
    sched, per_batch = make_scheduler(opt, cfg.train, steps_per_epoch)
    order_gen = torch.Generator().manual_seed(cfg.seed)

    # per member: its history and selection state (best score, best epoch, its weights, epochs since)
    sel = [{"history": [], "best_score": -float("inf"), "best_epoch": 0, "best_state": None, "since_best": 0}
           for _ in members]
    stopped_early = False
    train_seconds = first.train_seconds if first is not None else 0.0  # the cost of both fits
    val_seconds = first.val_seconds if first is not None else 0.0
    steps = 0
    first = 1
    fit_id = "+".join(c.hash() for c in members)  # a checkpoint resumes the same fit only
    resumed = ckpt.load(checkpoint, fit_id, device)
    if resumed is not None:  # a killed run of this config: continue after its last checkpoint
        loop = ckpt.restore(resumed, model, opt, sched, technique, order_gen, device)
        sel, train_seconds, steps, val_seconds = (loop[k] for k in ("members", "train_seconds", "steps", "val_seconds"))
        first = resumed["epoch"] + 1
    last_saved = time.perf_counter()
    bar = tqdm(range(first, cfg.train.epochs + 1), desc=f"{cfg.arm} seed {cfg.seed}", disable=not progress, leave=False)
    for epoch in bar:
        technique.epoch_start(epoch)
        t0 = time.perf_counter()
        model.train()
        total, seen = torch.zeros((), device=device), 0
        for batch in batches(data.train, cfg.train.batch_size, order_gen, sampler=sampler, index=train_index):
            if cfg.data.augment != "none":
                batch = batch._replace(x=augment(batch.x, cfg.data.augment, cfg.data.crop_padding))
            if channels_last:
                batch = batch._replace(x=batch.x.contiguous(memory_format=torch.channels_last))
            with autocast:
                loss = technique.loss(step_model, batch)
                pen = technique.penalty(model)
                if pen is not None:
                    loss = loss + pen
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            if per_batch:
                sched.step()
            total += loss.detach().float() * len(batch.y)
            seen += len(batch.y)
            steps += 1
            if cfg.train.max_steps is not None and steps >= cfg.train.max_steps:
                break
        if sched is not None and not per_batch:
            sched.step()
        train_loss = (total / max(1, seen)).item()  # one sync per epoch
        if not np.isfinite(train_loss):
            raise TrainingDiverged(f"{cfg.arm} seed {cfg.seed}: training loss is {train_loss} at epoch {epoch}")
        t1 = time.perf_counter()
        train_seconds += t1 - t0  # training cost excludes validation and checks
        extra = technique.epoch_end(model, epoch)
        common = {"epoch": epoch, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"], "seconds": train_seconds}
        shared = {**_fit_fractions(model, data.train), **extra}
        validated: dict[tuple, dict] = {}  # one validation per distinct rule (the robust one attacks)
        snapshot = None  # this epoch's weights, copied once for every rule that keeps them
        for member, state in zip(members, sel):
            key = _validation_key(member)
            if key not in validated:
                validated[key] = validate(model, data, member)
            row = {**common, **validated[key], **shared}
            state["history"].append(row)
            score = epoch if member.train.select == "last" else row[member.train.select]
            if score > state["best_score"]:
                snapshot = snapshot if snapshot is not None else copy.deepcopy(model.state_dict())
                state.update(best_score=score, best_epoch=epoch, since_best=0, best_state=snapshot)
            else:
                state["since_best"] += 1
        val_seconds += time.perf_counter() - t1
        bar.set_postfix(val_acc=f"{sel[0]['history'][-1]['val_acc']:.3f}", best=sel[0]["best_epoch"])
        if cfg.train.patience is not None and sel[0]["since_best"] >= cfg.train.patience:
            stopped_early = True
            break
        if cfg.train.max_steps is not None and steps >= cfg.train.max_steps:
            break
        if (checkpoint is not None and epoch < cfg.train.epochs
                and time.perf_counter() - last_saved >= cfg.train.checkpoint_every):
            loop = {"members": sel, "train_seconds": train_seconds, "steps": steps, "val_seconds": val_seconds}
            state = ckpt.capture(fit_id, epoch, model, opt, sched, technique, order_gen, device, loop)
            ckpt.save(checkpoint, state)
            last_saved = time.perf_counter()
    diagnostics = technique.diagnostics()
    results = []
    for i, (member, state) in enumerate(zip(members, sel)):
        selected = model if i == 0 else copy.deepcopy(model)
        selected.load_state_dict(state["best_state"])
        selected.eval()
        results.append(FitResult(model=selected, history=state["history"], best_epoch=state["best_epoch"],
                                 epochs_run=len(state["history"]), train_seconds=train_seconds,
                                 selection_rule=selection_rule(member), stopped_early=stopped_early,
                                 technique=technique, diagnostics=diagnostics, sampler=sampler,
                                 trained_examples=None if train_index is None else n_steps_from,
                                 val_seconds=val_seconds))
    results[0].siblings = results[1:]
    return results[0]
