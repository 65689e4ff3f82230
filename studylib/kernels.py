"""The CPU kernels a run computes with: the same on every x86-64 machine with AVX2, for any thread count.

Three things outside a run's config changed its numbers (measured on the digits CNNs, torch 2.13 CPU
wheel, an AVX-512 Intel machine: ``benchmarks/bench_pins.py``, ``tests/test_reproducibility.py``):

* PyTorch's own vectorised kernels (``exp``, ``log_softmax``, reductions, the optimizer's updates)
  are compiled once per instruction set and picked at the first operation: DEFAULT, AVX2 and
  AVX512 gave three different final weights. Pinned: ``ATEN_CPU_CAPABILITY=avx2``.
* MKL's matrix products (the linear layers) pick a code path per processor and split the work
  between threads: 1 and 2 threads gave different products. Pinned: ``MKL_CBWR=AVX2,STRICT``
  (MKL's conditional numerical reproducibility, strict mode: one result for any thread count).
  MKL's documentation gives the AVX2 branch to Intel processors only (an AMD one silently gets
  AUTO, its own code path); COMPATIBLE, the one branch for both, still gave different weights on
  1 and 2 threads in a 2-epoch CNN run, so it is not used.
* oneDNN's convolutions pick their own instruction set; its AVX-512 kernels gave different
  gradients on 1 and 2 threads, its AVX2 kernels the same. Pinned: ``ONEDNN_MAX_CPU_ISA=AVX2``.
  (Turning oneDNN off, convolutions through im2col and MKL, is thread-invariant too, but cost
  1.5-1.8× on the BatchNorm CNN and PGD-AT.)

:func:`pin` sets these environment variables; each is read once (torch's first operation, MKL's
first call, oneDNN's first kernel), so it must run before them: ``import studylib`` runs it, before
the kit imports torch; notebook kernels and sweep workers inherit it. :func:`use` starts a run: it
refuses a CPU run whose kernels are not the pinned ones (torch computed before the pins were set).
:func:`settings` is what ``env.json`` records and run reuse compares (:func:`identity`).

Not covered: full reductions of about a million elements or more (``x.sum()``) split between
threads (the digits studies gave bit-identical records on 1 and 2 threads); oneDNN may choose its
blocking from the cache sizes, and MKL has its own code path on AMD processors (neither measured
across machines here); GPUs and ARM machines have other kernels altogether.
"""

from __future__ import annotations

import functools
import os

#: environment variables read once by torch (first operation) and MKL (first call)
PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: the keys of :func:`settings` that a reused or resumed run must share (the thread count is left
#: out: the pinned kernels give the same numbers for any)
IDENTITY = ("cpu_capability", "mkldnn", "onednn_max_isa", "mkl_cbwr", "thread_invariant")


class KernelsNotPinned(RuntimeError):
    """torch computed before the pins were set: its kernels are not the pinned ones."""


def pin() -> None:
    """Set :data:`PINS` in this process's environment (inherited by its children)."""
    os.environ.update(PINS)


def expected_capability() -> str | None:
    """The capability the pin gives on this machine: AVX2 on an x86-64 processor with AVX2, else
    None (no pin applies: an ARM machine, or an x86 one without AVX2)."""
    import torch

    return "AVX2" if torch.cpu._is_avx2_supported() else None


@functools.lru_cache(maxsize=1)  # the kernels are chosen once per process: probe once, not per run
def _thread_invariant() -> bool:
    """Whether a linear layer (MKL) and a convolution's gradients (oneDNN) give the same bits on 1
    and 2 threads: the pins in effect (both differ under the unpinned kernels on an AVX-512 machine)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 1024, generator=g), torch.randn(128, 1024, generator=g)
    x, w = torch.randn(32, 1, 8, 8, generator=g), torch.randn(32, 1, 3, 3, generator=g)  # as a digits CNN's first
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            wn = w.clone().requires_grad_()
            F.conv2d(x, wn, padding=1).square().sum().backward()
            out.append((F.linear(a, b), wn.grad))
    finally:
        torch.set_num_threads(threads)
    return all(torch.equal(u, v) for u, v in zip(*out))


def settings() -> dict:
    """The effective kernel settings of this process (recorded in each run's ``env.json``)."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.enabled,
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "thread_invariant": _thread_invariant(),
            "threads": torch.get_num_threads(), **{f"env_{k}": os.environ.get(k) for k in PINS}}


def identity(env: dict) -> dict | None:
    """The part of an ``env.json`` (or of :func:`settings`) that two records of one computation share;
    None for a record made before the settings were recorded."""
    kernels = env.get("kernels") if "kernels" in env else env
    if not isinstance(kernels, dict) or not all(k in kernels for k in IDENTITY):
        return None
    return {k: kernels[k] for k in IDENTITY}


def use(device=None) -> dict:
    """Start a run: oneDNN on (its pinned kernels), then check that the pinned kernels are in effect
    on a CPU run (one line naming what is wrong, before any training, if not). Returns :func:`settings`."""
    import torch

    torch.backends.mkldnn.enabled = torch.backends.mkldnn.is_available()
    now = settings()
    expected = expected_capability()
    if expected is None or (device is not None and torch.device(device).type != "cpu"):
        return now
    if now["cpu_capability"] != expected or not now["thread_invariant"]:
        what = (f"{now['cpu_capability']} kernels, not {expected}" if now["cpu_capability"] != expected
                else "MKL or oneDNN kernels whose results differ between thread counts")
        raise KernelsNotPinned(f"torch computed with {what}: it ran before studylib pinned its CPU kernels; "
                               "import studylib before running anything in torch (restart the kernel)")
    return now
