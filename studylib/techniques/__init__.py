"""Technique registry. Importing this package imports every module in it, and each module
registers its technique(s) with ``@register``: adding a technique is adding one file. Techniques
from outside the kit (installed distributions with a ``studylib.techniques`` entry point, and
plugins named in ``$STUDYLIB_PLUGINS``) are loaded after the built-in ones: see
:mod:`studylib.techniques.plugins`; a refused plugin leaves the built-ins untouched."""

import importlib
import pkgutil

from .base import Param, RunContext, Technique, get_technique, register, technique_names

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "plugins"):
        importlib.import_module(f"{__name__}.{_module.name}")

from . import plugins  # noqa: E402  (after the built-ins: a plugin cannot take a built-in's name)

plugins.load_installed()

__all__ = ["Param", "RunContext", "Technique", "get_technique", "plugins", "register", "technique_names"]
