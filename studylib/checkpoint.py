"""A run's resume checkpoint: everything :func:`studylib.train.fit` needs to continue a killed run
from its last finished epoch as if it had never stopped.

One file, ``checkpoint.pt`` in the run's record directory, written atomically
(:func:`studylib.records.atomic_file`) at an epoch end at most every ``train.checkpoint_every``
seconds (0: every epoch) and removed once the run's record is done. It holds the model, optimizer
and schedule, the technique's state (:meth:`Technique.state_dict`), every RNG the loop draws from
(Python's, NumPy's, torch's on CPU and CUDA, and the loop's batch-order generator), the history
and the selection state (best score, best epoch, its weights, epochs since the best). Read back
with ``torch.load(weights_only=True)``: tensors and plain containers only, so a planted file runs
no code. On CPU the resumed run's history and metrics are bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

from .records import atomic_file

FORMAT = 2  # 2: the selection state per member of a shared fit (train.fit's siblings)


def rng_state(device: torch.device) -> dict:
    """Python's, NumPy's and torch's global RNG states (CUDA's too on a CUDA device), as tensors
    and plain containers (what ``weights_only`` loading admits)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())  # loaded onto the run's device: the setters take CPU bytes
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save(path: Path, state: dict) -> None:
    with atomic_file(path) as f:
        torch.save({"format": FORMAT, **state}, f)


def load(path: Path | None, run_hash: str, device: torch.device) -> dict | None:
    """The checkpoint at ``path`` if it is one of this run (``run_hash``: the config's hash), else
    None. One that cannot be read is reported in one line on stderr and ignored (the run starts
    over); it is never unpickled beyond tensors and plain containers."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, foreign, or holding more than tensors
        print(f"studylib: {path}: not a usable checkpoint ({type(e).__name__}); the run starts over",
              file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("run") != run_hash:
        print(f"studylib: {path}: a checkpoint of another run or format; the run starts over", file=sys.stderr)
        return None
    return state


def capture(run_hash: str, epoch: int, model, opt, sched, technique, order_gen: torch.Generator,
            device: torch.device, loop: dict) -> dict:
    """The state of ``fit`` at the end of ``epoch``; ``loop`` holds the loop's own variables
    (history, selection state, steps, training seconds)."""
    return {"run": run_hash, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(), "technique": technique.state_dict(),
            "rng": rng_state(device), "order_gen": order_gen.get_state(), "loop": loop}


def restore(state: dict, model, opt, sched, technique, order_gen: torch.Generator, device: torch.device) -> dict:
    """Put ``fit``'s objects back as :func:`capture` found them; returns the loop's variables."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    technique.load_state_dict(state["technique"])
    order_gen.set_state(state["order_gen"].cpu())
    set_rng_state(state["rng"], device)
    return state["loop"]
