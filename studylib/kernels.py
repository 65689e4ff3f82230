"""The CPU kernels a run computes with: the same on every x86-64 machine with AVX2, for any thread count.

Three things outside a run's config changed its numbers (measured on the dropout study's CNN, 20
epochs, torch 2.13 CPU wheel, an AVX-512 Intel machine: ``benchmarks/bench_pins.py`` and
``tests/test_reproducibility.py``):

* PyTorch's own vectorised kernels (``exp``, ``log_softmax``, reductions, the optimizer's updates)
  are compiled once per instruction set and picked at the first operation: DEFAULT, AVX2 and
  AVX512 gave three different final weights. Pinned with ``ATEN_CPU_CAPABILITY=avx2``.
* MKL's matrix products pick a code path per processor and split the work between threads:
  1 and 2 threads gave different linear layers. ``MKL_CBWR=AVX2,STRICT`` (MKL's conditional
  numerical reproducibility, strict mode) gives one result for any thread count and processor
  with AVX2.
* oneDNN's convolutions (``torch.backends.mkldnn``) pick their own instruction set, blocking (from
  the cache sizes) and thread split: 1 and 2 threads differed, and ``ONEDNN_MAX_CPU_ISA=AVX2``
  does not make them thread-invariant. A run turns them off: convolutions then go through
  im2col and MKL's (pinned) matrix products.

:func:`pin` sets the two environment variables; both are read once, at torch's first operation
and MKL's first call, so it must run before them (``import studylib`` runs it, before the kit
imports torch; notebook kernels and sweep workers inherit it). :func:`use` starts a run: it turns
oneDNN off and refuses a CPU run whose kernels are not the pinned ones (torch computed before the
pins were set). :func:`settings` is what ``env.json`` records and run reuse compares.

Full reductions of about a million elements or more (``x.sum()``) still split between threads; the
digits studies have none in training or evaluation (1 and 2 threads give bit-identical records).
"""

from __future__ import annotations

import os

#: environment variables read once by torch (first operation) and MKL (first call)
PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
#: the keys of :func:`settings` that a reused or resumed run must share (the thread count is left
#: out: the pinned kernels give the same numbers for any)
IDENTITY = ("cpu_capability", "mkldnn", "mkl_cbwr", "mkl_thread_invariant")


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


def _mkl_thread_invariant() -> bool | None:
    """Whether a matrix product gives the same bits on 1 and 2 threads (MKL's strict CNR in
    effect); None where torch has no MKL."""
    import torch

    if not torch.backends.mkl.is_available():
        return None
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 1024, generator=g), torch.randn(128, 1024, generator=g)
    threads = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(torch.nn.functional.linear(a, b))
    finally:
        torch.set_num_threads(threads)
    return bool(torch.equal(*out))


def settings() -> dict:
    """The effective kernel settings of this process (recorded in each run's ``env.json``)."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.enabled,
            "mkl_cbwr": os.environ.get("MKL_CBWR"), "mkl_thread_invariant": _mkl_thread_invariant(),
            "threads": torch.get_num_threads(), **{f"env_{k}": os.environ.get(k) for k in PINS}}


def identity(env: dict) -> dict | None:
    """The part of an ``env.json`` (or of :func:`settings`) that two records of one computation share;
    None for a record made before the settings were recorded."""
    kernels = env.get("kernels") if "kernels" in env else env
    if not isinstance(kernels, dict) or not all(k in kernels for k in IDENTITY):
        return None
    return {k: kernels[k] for k in IDENTITY}


def use(device=None) -> dict:
    """Start a run: oneDNN off, then check that the pinned kernels are in effect on a CPU run (one
    line naming what is wrong, before any training, if not). Returns :func:`settings`."""
    import torch

    torch.backends.mkldnn.enabled = False
    now = settings()
    expected = expected_capability()
    if expected is None or (device is not None and torch.device(device).type != "cpu"):
        return now
    if now["cpu_capability"] != expected or now["mkl_thread_invariant"] is False:
        what = (f"{now['cpu_capability']} kernels, not {expected}" if now["cpu_capability"] != expected
                else "MKL without MKL_CBWR=AVX2,STRICT (its products differ between thread counts)")
        raise KernelsNotPinned(f"torch computed with {what}: it ran before studylib pinned its CPU kernels; "
                               "import studylib before running anything in torch (restart the kernel)")
    return now
