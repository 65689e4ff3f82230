"""Techniques from outside the kit: installed distributions and named modules or files.

Only what is explicitly installed or named is loaded:

* an installed distribution declaring the entry-point group ``studylib.techniques`` (its
  ``pyproject.toml``: ``[project.entry-points."studylib.techniques"] label_smoothing =
  "studylib_label_smoothing:LabelSmoothing"``), found with :func:`importlib.metadata.entry_points`
  when the registry is imported, in every process (notebook kernels and sweep workers too);
* a module name or a ``.py`` file named by ``--plugin`` on the command line, by a params file's
  top-level ``plugins: [...]`` key (relative paths from the file's folder), or by
  ``$STUDYLIB_PLUGINS`` (``os.pathsep``-separated; the command sets it, so kernels and workers load
  the same plugins).

A plugin registers its technique with ``@register`` (or its entry point names the class itself).
Its technique must declare ``home_scenario`` and ``home_metric`` and may not take a name already
registered. A plugin that fails in any way is refused as a whole with one line naming it
(:class:`PluginError`; an installed one is listed by ``studylib list`` and named again if its
technique is asked for), and the built-in techniques are untouched. Where each technique came from
(module, distribution, version) is :func:`origin`, written into every run's ``env.json``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path

from . import base

GROUP = "studylib.techniques"
ENV = "STUDYLIB_PLUGINS"

_ORIGINS: dict[str, dict] = {}  # technique name → where it came from (plugins only)
_LOADED: dict[str, list[str]] = {}  # plugin (resolved spec) → the techniques it registered


class PluginError(ValueError):
    """A plugin refused: one line naming it and saying why."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _dist_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution providing a top-level module, and its version (None, None when
    the module is not installed, e.g. a file)."""
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _guarded(label: str, load, origin: dict) -> list[str]:
    """Run ``load`` (which imports the plugin and returns what it loaded), keeping the techniques
    it registered only if all is well; otherwise none of them, and :class:`PluginError`."""
    before = set(base.technique_names())
    try:
        obj = load()
        if isinstance(obj, type) and issubclass(obj, base.Technique) and obj.name not in before:
            base.register(obj)  # an entry point naming the class itself
        added = sorted(set(base.technique_names()) - before)
        if not added:
            if isinstance(obj, type) and issubclass(obj, base.Technique) and obj.name in before:
                raise ValueError(f"technique {obj.name!r} clashes with the technique of that name in "
                                 f"{base.get_technique(obj.name).__module__}")
            raise ValueError(f"registers no technique (decorate its Technique class with "
                             f"studylib.techniques.register)")
    except BaseException as e:  # an import error, a failed check, a clash: the plugin as a whole is refused
        for name in set(base.technique_names()) - before:
            base.unregister(name)
        if isinstance(e, KeyboardInterrupt):
            raise
        reason = _first_line(e).removeprefix("ValueError: ")
        base.REFUSED[label] = reason
        raise PluginError(f"plugin {label} refused: {reason}") from None
    base.REFUSED.pop(label, None)
    for name in added:
        cls = base.get_technique(name)
        dist, version = origin.get("distribution"), origin.get("version")
        if dist is None:
            dist, version = _dist_of(cls.__module__)
        if version is None:
            version = getattr(sys.modules.get(cls.__module__), "__version__", None)
        _ORIGINS[name] = {**origin, "module": cls.__module__, "class": cls.__qualname__, "distribution": dist,
                          "version": version}
    return added


def _resolve(spec: str, relative_to: Path | None = None) -> str:
    """A file spec as an absolute path (relative to ``relative_to``, else the working directory);
    a module name as it is."""
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = (relative_to or Path.cwd()) / path
        return str(path.resolve())
    return spec


def load(spec: str, relative_to: Path | None = None, source: str = "--plugin") -> list[str]:
    """Load one named plugin: a module name (``my_package.my_technique``) or a ``.py`` file.
    Returns the technique names it registered; loading it again is a no-op. Raises
    :class:`PluginError` (one line) when it is refused."""
    spec = _resolve(str(spec), relative_to)
    if spec in _LOADED:
        return _LOADED[spec]
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"plugin {spec} refused: no such file")
        module_name = f"studylib_plugin_{path.stem}"

        def do_load():
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            return module

        origin = {"source": f"file ({source})", "path": str(path)}
    else:
        def do_load():
            return importlib.import_module(spec)

        origin = {"source": f"module ({source})"}
    _LOADED[spec] = _guarded(spec, do_load, origin)
    return _LOADED[spec]


def load_installed() -> dict[str, str]:
    """Load every entry point of the group ``studylib.techniques`` and every plugin named in
    ``$STUDYLIB_PLUGINS``. Never raises: the refused ones are returned (and kept in
    :func:`refused`) as ``{what: reason}``."""
    problems = {}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        label = f"{ep.name} (entry point {ep.value}" + (f" of {ep.dist.name} {ep.dist.version})" if ep.dist else ")")
        if label in _LOADED:
            continue
        origin = {"source": "entry point", "entry_point": f"{ep.name} = {ep.value}",
                  "distribution": ep.dist.name if ep.dist else None, "version": ep.dist.version if ep.dist else None}
        try:
            _LOADED[label] = _guarded(label, ep.load, origin)
        except PluginError as e:
            problems[label] = str(e)
    for spec in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        try:
            load(spec, source=ENV)
        except PluginError as e:
            problems[spec] = str(e)
    return problems


def use(specs, relative_to: Path | None = None) -> list[str]:
    """Load the named plugins and add them to ``$STUDYLIB_PLUGINS``, so that the notebook kernels
    and sweep workers started from this process load them too. Raises :class:`PluginError`."""
    names = []
    for spec in specs or ():
        names += load(spec, relative_to)
        resolved = _resolve(str(spec), relative_to)
        current = [s for s in os.environ.get(ENV, "").split(os.pathsep) if s]
        if resolved not in current:
            os.environ[ENV] = os.pathsep.join(current + [resolved])
    return names


def refused() -> dict[str, str]:
    """The plugins refused so far: what was named → the reason."""
    return dict(base.REFUSED)


def origin(name: str) -> dict:
    """Where technique ``name`` came from: source (built-in, entry point, file or module), module,
    class, distribution and version."""
    if name in _ORIGINS:
        return dict(_ORIGINS[name])
    cls = base.get_technique(name)
    try:
        version = metadata.version("studylib")
    except metadata.PackageNotFoundError:
        version = None
    return {"source": "built-in", "module": cls.__module__, "class": cls.__qualname__, "distribution": "studylib",
            "version": version}
