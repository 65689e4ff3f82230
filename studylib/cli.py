"""The ``studylib`` command.

    studylib run <study> [--profile P] [-p key value]... [-f params.yaml] [--outputs DIR] [--force]
    studylib check <params.yaml | study> [--profile P]
    studylib sweep <sweep.yaml | name> [--workers N] [--scheduler tcp://host:port] [--data-root DIR]
    studylib report [--profile P]
    studylib data download|check|list [NAME] [--root DIR] [--mirror URL]
    studylib list

``run`` validates the config first (a bad key, type or value stops it with one line naming the
field, exit 2, before anything trains), then executes ``notebooks/<study>.ipynb`` with papermill
into the study's record; a study whose record is done is not executed again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import paths
from .config import PROFILES, SCENARIOS, ConfigError, DATASETS, check_params_file, load_study, study_names
from .datasets import DataError, add_data_parser
from .records import RecordError, atomic_write_bytes, atomic_write_json, read_json


def _err(msg: str, code: int = 2) -> int:
    print(f"studylib: error: {msg}", file=sys.stderr)
    return code


def _overrides(pairs) -> dict:
    return {k: v for k, v in (pairs or [])}


def execute_study(study: str, profile: str | None = None, overrides: dict | None = None,
                  params_file: str | None = None, outputs=None, force: bool = False,
                  progress: bool = True) -> Path:
    """Validate, then execute the study notebook with papermill into its record. Returns the
    study's record directory. Raises :class:`ConfigError` before any work on a bad config."""
    import papermill as pm

    from .data import check_available

    cfg = load_study(study, profile, overrides, params_file)  # fails fast, naming the field
    check_available(cfg.data, read=False)  # a missing dataset file: one line, before any work
    outputs = paths.outputs_dir(outputs)
    record = outputs / "studies" / cfg.study / cfg.hash()
    if (record / "done").exists() and not force:
        return record
    notebook = paths.notebooks_dir() / f"{study}.ipynb"
    if not notebook.exists():
        raise ConfigError(f"study: no notebook {notebook}")
    record.mkdir(parents=True, exist_ok=True)
    (record / "done").unlink(missing_ok=True)
    parameters = {"profile": cfg.profile, "overrides": dict(overrides or {}),
                  "params_file": str(Path(params_file).resolve()) if params_file else None,
                  "outputs": str(outputs)}
    t0 = time.perf_counter()
    pm.execute_notebook(str(notebook), str(record / "notebook.ipynb"), parameters=parameters,
                        kernel_name="python3", progress_bar=progress, cwd=str(paths.notebooks_dir()))
    atomic_write_json(record / "done", {"seconds": time.perf_counter() - t0, "parameters": parameters})
    return record


def cmd_run(args) -> int:
    import papermill as pm

    t0 = time.perf_counter()
    _set_data_root(args)
    try:
        record = execute_study(args.study, args.profile, _overrides(args.param), args.file, args.outputs,
                               args.force, progress=not args.quiet)
    except (ConfigError, DataError) as e:
        return _err(str(e))
    except pm.PapermillExecutionError as e:
        first_line = str(e.evalue).strip().splitlines()[0] if str(e.evalue).strip() else ""
        return _err(f"the notebook failed in cell {e.exec_count}: {e.ename}: {first_line} "
                    f"(finished runs and the executed copy are kept in the study record)", 1)
    done = read_json(record / "done")
    print(f"study record: {record}")
    print(f"executed notebook: {record / 'notebook.ipynb'}")
    print(f"notebook took {done.get('seconds', 0):.1f} s; this command {time.perf_counter() - t0:.1f} s"
          + (" (already done: nothing recomputed)" if time.perf_counter() - t0 < 5 and not args.force else ""))
    try:
        runs = read_json(record / "runs.json")
        print(f"run records ({len(runs)}): {Path(runs[0]['record']).parent}/<hash>")
    except RecordError:
        pass
    return 0


def build_report(outputs=None, progress: bool = True, profile: str | None = None) -> Path:
    """Execute the synthesis notebook over every run record and export it to HTML. Returns the
    HTML path. Reads records only: nothing is retrained."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    outputs = paths.outputs_dir(outputs)
    report_dir = outputs / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    executed = report_dir / "synthesis.ipynb"
    pm.execute_notebook(str(paths.notebooks_dir() / "synthesis.ipynb"), str(executed),
                        parameters={"outputs": str(outputs), "report_dir": str(report_dir), "profile": profile},
                        kernel_name="python3", progress_bar=progress, cwd=str(paths.notebooks_dir()))
    exporter = HTMLExporter()
    exporter.exclude_input = True  # a report for readers: the code is in the executed notebook
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = report_dir / "synthesis.html"
    atomic_write_bytes(html, body.encode())
    return html


def cmd_report(args) -> int:
    import papermill as pm

    t0 = time.perf_counter()
    try:
        html = build_report(args.outputs, progress=not args.quiet, profile=args.profile)
    except pm.PapermillExecutionError as e:
        first_line = str(e.evalue).strip().splitlines()[0] if str(e.evalue).strip() else ""
        return _err(f"the synthesis notebook failed in cell {e.exec_count}: {e.ename}: {first_line}", 1)
    print(f"report: {html} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _set_data_root(args) -> None:
    """``--data-root`` becomes ``$STUDYLIB_DATA_ROOT``, so notebook kernels and sweep workers
    (local or Dask, started from this process) see it too."""
    import os

    if getattr(args, "data_root", None):
        os.environ["STUDYLIB_DATA_ROOT"] = str(Path(args.data_root).resolve())


def cmd_sweep(args) -> int:
    from .sweep import run_sweep

    t0 = time.perf_counter()
    _set_data_root(args)
    try:
        statuses = run_sweep(args.sweep, args.outputs, args.workers, args.scheduler, progress=not args.quiet)
    except (ConfigError, DataError) as e:
        return _err(str(e))
    failed = [s for s in statuses if s["status"] != "done"]
    for s in sorted(statuses, key=lambda s: s["point"]):
        print(f"  {s['seconds']:7.1f} s  {s['status']:6s}  {s['point']}")
    print(f"sweep: {len(statuses) - len(failed)} done, {len(failed)} failed in {time.perf_counter() - t0:.1f} s")
    for s in failed:
        print(f"  failed: {s['point']}: {s['reason']}")
    return 1 if failed else 0


def cmd_check(args) -> int:
    target = Path(args.target)
    try:
        if target.suffix in (".yaml", ".yml") or target.exists():
            cfg = check_params_file(target, args.profile)
        else:
            cfg = load_study(args.target, args.profile)
    except ConfigError as e:
        return _err(str(e))
    runs = cfg.runs()
    print(f"ok: study {cfg.study}, profile {cfg.profile}: {len(cfg.arms)} arms × {len(cfg.seeds)} seeds = "
          f"{len(runs)} runs on {cfg.data.dataset}/{cfg.data.scenario.kind} (config {cfg.hash()})")
    return 0


def cmd_list(args) -> int:
    from .techniques import get_technique, technique_names

    print("studies:   " + ", ".join(study_names()))
    print("profiles:  " + ", ".join(PROFILES))
    from . import datasets

    standard = [f"{n} ({datasets.status(n)} under {datasets.data_root()})" for n in datasets.STANDARD]
    print("datasets:  " + ", ".join(d for d in DATASETS if d not in datasets.STANDARD) + " (embedded); "
          + ", ".join(standard))
    print("scenarios: " + ", ".join(SCENARIOS))
    print("techniques (hyperparameter: default (search range) — meaning):")
    for name in technique_names():
        cls = get_technique(name)
        print(f"  {name}: {cls.summary}")
        for key, p in cls.params.items():
            print(f"      {key}: {p.describe()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studylib", description="Robust Training Study Kit")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a study notebook into its run record")
    run.add_argument("study")
    run.add_argument("--profile", choices=PROFILES, default=None, help="default: $STUDYLIB_PROFILE or quick")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                     help="override a config value, dotted key, YAML value (repeatable)")
    run.add_argument("-f", "--file", help="a params file merged over the study's own")
    run.add_argument("--outputs", help="outputs directory (default: $STUDYLIB_OUTPUTS or <project>/outputs)")
    run.add_argument("--force", action="store_true", help="execute even if the study record is done")
    run.add_argument("--data-root", help="where the standard datasets are (default: $STUDYLIB_DATA_ROOT or <project>/data)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="the synthesis report (HTML) from every run record; retrains nothing")
    rep.add_argument("--outputs", help="outputs directory (default: $STUDYLIB_OUTPUTS or <project>/outputs)")
    rep.add_argument("--profile", choices=PROFILES, default=None, help="report this profile's runs (default: the most common)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=cmd_report)
    sweep = sub.add_parser("sweep", help="run every point of a sweep file (validated first; resumable)")
    sweep.add_argument("sweep", help="a sweep file, or the name of one in params/sweeps/")
    sweep.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core, or one on a GPU machine)")
    sweep.add_argument("--scheduler", default=None, help="a Dask scheduler address, e.g. tcp://host:8786")
    sweep.add_argument("--outputs", help="outputs directory (default: $STUDYLIB_OUTPUTS or <project>/outputs)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument("--data-root", help="where the standard datasets are (default: $STUDYLIB_DATA_ROOT or <project>/data)")
    sweep.set_defaults(func=cmd_sweep)
    check = sub.add_parser("check", help="validate a params file or a study without running")
    check.add_argument("target", help="a params file, or a study name")
    check.add_argument("--profile", choices=PROFILES, default=None)
    check.set_defaults(func=cmd_check)
    lst = sub.add_parser("list", help="studies, techniques with defaults and ranges, datasets, scenarios, profiles")
    lst.set_defaults(func=cmd_list)
    add_data_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _err("interrupted (finished run records are kept)", 130)
    except (RecordError, RuntimeError, OSError) as e:
        return _err(f"{type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main())
