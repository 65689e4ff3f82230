"""studylib — the shared library of the Robust Training Study Kit.

Public API (everything a notebook needs)::

    cfg = load_study("adversarial", profile="quick", overrides={"train.epochs": 5})
    results = Study(cfg).run()          # trains what has no finished record, then reads records
    results.summary()                   # mean ± std per arm

``import studylib`` loads the config and the technique registry only; torch, pandas and the rest
come with ``Study`` (imported on first use), so ``studylib check`` and ``studylib list`` answer at once.
"""

from . import kernels as _kernels

_kernels.pin()  # before the kit (or anything after it) runs torch: see studylib.kernels

from .config import ConfigError, RunConfig, StudyConfig, load_study
from .techniques import get_technique, technique_names

__version__ = "0.1.0"

__all__ = ["ConfigError", "RunConfig", "Study", "StudyConfig", "StudyResults", "get_technique", "load_study",
           "technique_names", "__version__"]

_FROM_STUDY = ("Study", "StudyResults")


def __getattr__(name: str):
    if name in _FROM_STUDY:
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FROM_STUDY))
