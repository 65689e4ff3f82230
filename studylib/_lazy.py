"""Deferred imports, so that what only needs the kit's names and settings (``studylib list``,
``studylib check``, config validation, the technique registry) answers without importing torch.

    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")
    attacks = lazy_import("studylib.attacks")

binds a stand-in module; the first attribute read on it imports the real module and puts it in place
of the stand-in in the importing module's namespace, so later uses are ordinary global look-ups.
Module-level code must not touch such a name (a decorator like ``@torch.no_grad()`` would import at
once: use :func:`no_grad`).
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

__all__ = ["lazy_import", "no_grad"]


class _LazyModule(types.ModuleType):
    def __init__(self, name: str, namespace: dict):
        super().__init__(name)
        self.__dict__["_lazy_namespace"] = namespace

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__name__)
        namespace = self.__dict__["_lazy_namespace"]
        for key, value in list(namespace.items()):
            if value is self:
                namespace[key] = module
        return module

    def __getattr__(self, attr: str):
        return getattr(self._load(), attr)

    def __dir__(self):
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r} (not imported yet)>"


def lazy_import(name: str) -> types.ModuleType:
    """A stand-in for the module ``name``, imported on its first attribute read (see the module's
    docstring). Returns the real module when it is already imported."""
    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name, sys._getframe(1).f_globals)


def no_grad(fn):
    """``@torch.no_grad()`` for a module that imports torch lazily: torch is imported when the
    function is first called, not when it is defined."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper
