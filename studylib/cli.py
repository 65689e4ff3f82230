"""The ``studylib`` command: parses arguments, calls the library, prints. Nothing in ``studylib``
imports this module; problems arrive as exceptions and leave as one ``studylib: error:`` line.

    studylib run <study> [--profile P] [-p key value]... [-f params.yaml] [--outputs DIR] [--force]
    studylib check <params.yaml | study> [--profile P]
    studylib sweep <sweep.yaml | name> [--workers N] [--scheduler tcp://host:port] [--data-root DIR]
    studylib report [--profile P]
    studylib audit <study> [--profile P] [--arm A]... [--tolerance T] [--max-examples N] [--data-root DIR]
    studylib data download|check|list [NAME] [--root DIR] [--mirror URL]
    studylib list
    studylib compare <technique> [--profile P] [--hparams K=V ...] [--scenario KIND]... [-p key value]...
    studylib new technique <name> [--dir DIR]

Every command takes ``--plugin MODULE|FILE.py`` (repeatable): a technique from outside the kit
(installed distributions with a ``studylib.techniques`` entry point are found by themselves).

``run`` validates the config first (a bad key, type or value stops it with one line naming the
field, exit 2, before anything trains), then executes ``notebooks/<study>.ipynb`` with papermill
into the study's record (:mod:`studylib.execute`); a study whose record is done is not executed
again. ``check`` and ``list`` import neither torch nor papermill: they answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import datasets, paths
from .config import PROFILES, SCENARIOS, ConfigError, DATASETS, check_params_file, load_study, study_names
from .datasets import DataError
from .records import RecordError, read_json


def _err(msg: str, code: int = 2) -> int:
    print(f"studylib: error: {msg}", file=sys.stderr)
    return code


def _overrides(pairs) -> dict:
    return {k: v for k, v in (pairs or [])}


def cmd_run(args) -> int:
    from .execute import NotebookFailed, execute_study

    t0 = time.perf_counter()
    _set_data_root(args)
    try:
        done = execute_study(args.study, args.profile, _overrides(args.param), args.file, args.outputs,
                             args.force, progress=not args.quiet)
    except (ConfigError, DataError) as e:
        return _err(str(e))
    except NotebookFailed as e:
        return _err(f"{e} (finished runs and the executed copy are kept in the study record)", 1)
    print(f"study record: {done.record}")
    print(f"executed notebook: {done.record / 'notebook.ipynb'}")
    if done.executed:
        print(f"notebook took {done.seconds:.1f} s; this command {time.perf_counter() - t0:.1f} s")
    else:
        print(f"already done: nothing recomputed (the notebook took {done.seconds:.1f} s when it ran)")
    try:
        runs = read_json(done.record / "runs.json")
        print(f"run records ({len(runs)}): {Path(runs[0]['record']).parent}/<hash>")
    except RecordError:
        pass
    return 0


def cmd_report(args) -> int:
    from .execute import NotebookFailed, build_report

    t0 = time.perf_counter()
    try:
        html = build_report(args.outputs, progress=not args.quiet, profile=args.profile)
    except NotebookFailed as e:
        return _err(str(e), 1)
    print(f"report: {html} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _set_data_root(args) -> None:
    """``--data-root`` becomes ``$STUDYLIB_DATA_ROOT``, so notebook kernels and sweep workers
    (local or Dask, started from this process) see it too."""
    import os

    if getattr(args, "data_root", None):
        os.environ["STUDYLIB_DATA_ROOT"] = str(Path(args.data_root).resolve())


def _point_line(status: dict) -> str:
    """One line per finished point of a sweep: what, how it ended, how long."""
    if status["status"] != "done":
        return f"  failed      {status['point']}: {status['reason']} (after {status['seconds']:.1f} s)"
    if status.get("executed") is False:
        return f"  done        {status['point']} (already done: nothing recomputed)"
    return f"  done        {status['point']} in {status['seconds']:.1f} s"


def cmd_sweep(args) -> int:
    from tqdm.auto import tqdm

    from .sweep import run_sweep

    t0 = time.perf_counter()
    _set_data_root(args)
    try:
        statuses = run_sweep(args.sweep, args.outputs, args.workers, args.scheduler, progress=not args.quiet,
                             on_result=lambda s: tqdm.write(_point_line(s)))  # printed above the bar
    except (ConfigError, DataError) as e:
        return _err(str(e))
    failed = [s for s in statuses if s["status"] != "done"]
    print(f"sweep: {len(statuses) - len(failed)} done, {len(failed)} failed in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def cmd_audit(args) -> int:
    """The standard AutoAttack, afresh on every finished run's checkpoint of a study (studylib.audit):
    a line per run, the table in <outputs>/audit/<study>-<profile>.csv, exit 1 if a number is overstated."""
    import pandas as pd

    from .audit import TOLERANCE, audit_run
    from .records import iter_run_records

    tolerance = TOLERANCE if args.tolerance is None else args.tolerance
    _set_data_root(args)
    if args.study not in study_names():
        return _err(f"unknown study {args.study!r} (known: {', '.join(study_names())})")
    todo = []
    for rec in iter_run_records(args.outputs, args.study):
        try:
            cfg = rec.config() if rec.done else None
        except RecordError as e:
            return _err(str(e))
        if cfg and cfg.get("profile") == args.profile and (not args.arm or cfg.get("arm") in args.arm) \
                and (not args.seed or cfg.get("seed") in args.seed) and cfg.get("eval", {}).get("attacks"):
            todo.append(rec)
    if not todo:
        return _err(f"no finished {args.study} runs of profile {args.profile}"
                    f"{' and arms ' + ', '.join(args.arm) if args.arm else ''} with attacks under "
                    f"{paths.outputs_dir(args.outputs) / 'runs'}")
    out = paths.outputs_dir(args.outputs) / "audit"
    out.mkdir(parents=True, exist_ok=True)
    # a selection of runs gets its own table (two audits of one study in parallel never share a file)
    selection = "".join(f"-{a}" for a in args.arm or []) + "".join(f"-{s}" for s in args.seed or [])
    path = out / f"{args.study}-{args.profile}{selection}.csv"
    rows = []
    for rec in todo:
        try:
            r = audit_run(rec.dir, tolerance, args.max_examples)
        except (RecordError, DataError) as e:
            return _err(f"{e} (the runs audited before it are in {path})" if rows else str(e))
        rows.append(r)
        verdict = {True: "OVERSTATED", False: "holds", None: "(subset: no verdict)"}[r["overstated"]]
        print(f"{r['arm']:14s} seed {r['seed']}: reported {r['reported']:.4f}, AutoAttack {r['independent']:.4f}, "
              f"{r['basis']} {r['union']:.4f} ({r['diff']:+.4f}) at ε={r['eps']:g} on {r['n']} examples: {verdict} "
              f"({r['seconds']:.0f} s; broke: {r['broke']})", flush=True)
        # written after every run (one can take minutes): an error or an interrupt keeps what finished.
        # Earlier audits of other runs of the study stay; a rerun replaces its own rows.
        table = pd.DataFrame([r])
        if path.exists():
            before = pd.read_csv(path)
            table = pd.concat([before[~before.record.isin(table.record)], table], ignore_index=True)
        table.to_csv(path, index=False)
    bad = [r for r in rows if r["overstated"]]
    print(f"audit: {len(rows)} runs, {len(bad)} overstated (tolerance {tolerance:g}); table: {path}")
    return 1 if bad else 0


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
    from .techniques import get_technique, plugins, technique_names

    print("studies:   " + ", ".join(study_names()))
    print("profiles:  " + ", ".join(PROFILES))
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
    _list_plugins(plugins, technique_names())
    return 0


# -- techniques from outside the kit: plugins, compare, the scaffold ---------------------------------
def _list_plugins(plugins, names) -> None:
    """`studylib list`: where each plugin technique came from, and the refused plugins (one line each)."""
    for name in names:
        o = plugins.origin(name)
        if o["source"] != "built-in":
            print(f"plugin {name}: {o['source']}, module {o['module']}"
                  + (f", {o['distribution']} {o.get('version') or ''}".rstrip() if o.get("distribution") else ""))
    for what, reason in plugins.refused().items():
        print(f"refused plugin {what}: {reason}")


def _use_plugins(args) -> int | None:
    """``--plugin`` of any command: loaded here and named in $STUDYLIB_PLUGINS for the kernels and
    workers; a refused one stops the command in one line (exit 2)."""
    from .techniques import plugins

    try:
        plugins.use(getattr(args, "plugin", None))
    except plugins.PluginError as e:
        return _err(str(e))
    return None


def _hparams(pairs) -> dict:
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--hparams: {pair!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def cmd_compare(args) -> int:
    """One technique against every baseline (studylib.versus): validated first, then the matrix in
    every scenario with the technique's arm (finished records reused), then the report."""
    from tqdm.auto import tqdm

    from . import versus

    t0 = time.perf_counter()
    _set_data_root(args)
    try:
        plan = versus.plan(args.technique, args.profile, _hparams(args.hparams), _overrides(args.param),
                           args.scenario, [str(Path(p).resolve()) if Path(p).exists() else p for p in args.plugin or []])
    except ConfigError as e:
        return _err(str(e))
    print(f"{args.technique}: arm {plan.arm} of the matrix study, {len(plan.scenarios)} scenarios, profile {plan.profile}"
          + (f"; ERM twins added: {', '.join(plan.twins)}" if plan.twins else ""))
    try:
        statuses = versus.compare(plan, args.outputs, args.workers, progress=not args.quiet,
                                  on_result=lambda s: tqdm.write(_point_line(s)), in_process=args.in_process)
    except (ConfigError, DataError) as e:
        return _err(str(e))
    report = versus.write_report(plan, args.outputs, statuses)
    failed = [s for s in statuses if s["status"] != "done"]
    print(f"report: {report} ({time.perf_counter() - t0:.1f} s; {len(failed)} of {len(statuses)} scenarios failed)")
    return 1 if failed else 0


def cmd_new(args) -> int:
    from .scaffold import new_technique

    try:
        written = new_technique(args.name, args.dir)
    except (ValueError, FileExistsError) as e:
        return _err(str(e))
    for path in written:
        print(f"wrote {path}")
    return 0


def _add_plugin_parsers(sub) -> None:
    cmp = sub.add_parser("compare", help="a technique (built-in or plugin) against every technique of the matrix "
                                         "in its five scenarios, beside equal-footing ERM twins; reuses finished runs")
    cmp.add_argument("technique")
    cmp.add_argument("--profile", choices=PROFILES, default="quick",
                     help="quick (default) and full: the report seeds; smoke: design seeds, nothing is a finding")
    cmp.add_argument("--hparams", nargs="+", metavar="KEY=VALUE", help="the technique's hyperparameters (YAML values)")
    cmp.add_argument("--scenario", action="append", choices=SCENARIOS,
                     help="only this scenario of the matrix sweep (repeatable; default: all five)")
    cmp.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                     help="override a matrix config value, dotted key, YAML value (repeatable), e.g. -p arms.deq null")
    cmp.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    cmp.add_argument("--in-process", action="store_true",
                     help="train in this process, one scenario after another, without executing notebooks "
                          "(the same run records; no kernel start-up per scenario)")
    cmp.add_argument("--outputs", help="outputs directory (default: $STUDYLIB_OUTPUTS or <project>/outputs)")
    cmp.add_argument("--data-root", help="where the standard datasets are")
    cmp.add_argument("--quiet", action="store_true", help="no progress bar")
    cmp.set_defaults(func=cmd_compare)
    new = sub.add_parser("new", help="scaffold: `new technique NAME` writes a technique file, its test and a params snippet")
    new.add_argument("kind", choices=["technique"])
    new.add_argument("name", help="the technique's name (a Python identifier, e.g. label_smoothing)")
    new.add_argument("--dir", default=None, help="where to write (default: in the kit, studylib/techniques/ and tests/)")
    new.set_defaults(func=cmd_new)
    for parser in sub.choices.values():
        parser.add_argument("--plugin", action="append", metavar="MODULE|FILE.py",
                            help="load a technique from this module or file (repeatable)")


_ROOT_HELP = "data root (default: $STUDYLIB_DATA_ROOT or <project>/data)"


def _describe(split: str, x, y, classes) -> str:
    import numpy as np

    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), int)
    per_class = " ".join(f"{i}:{c}" for i, c in enumerate(counts))
    return f"  {split:5s} x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} {y.dtype}; per class {per_class}"


def cmd_data(args) -> int:
    """``studylib data download|check|list``: 0 on success; one ``studylib: error:`` line and 2 on a
    DataError."""
    try:
        if args.data_command == "download":
            from .download import download

            t0 = time.perf_counter()
            d = download(args.name, args.root, args.mirror, progress=not args.quiet, timeout=args.timeout)
            print(f"{args.name}: ready in {d} ({time.perf_counter() - t0:.1f} s)")
        elif args.data_command == "check":
            spec = datasets.STANDARD[args.name]
            root = datasets.data_root(args.root)
            x_train, y_train, x_test, y_test = datasets.load(args.name, root)
            print(f"ok: {spec.name} in {root / spec.directory}: {len(x_train)} train, {len(x_test)} test "
                  f"images of shape {tuple(x_train.shape[1:])}, {len(spec.classes)} classes")
            print(_describe("train", x_train, y_train, spec.classes))
            print(_describe("test", x_test, y_test, spec.classes))
        else:  # list
            root = datasets.data_root(args.root)
            print(f"data root: {root}")
            for name, spec in datasets.STANDARD.items():
                print(f"  {name:14s} {spec.directory + '/':16s} {datasets.status(name, root)}")
                print(f"  {'':14s} {spec.how}")
    except DataError as e:
        return _err(str(e))
    return 0


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="standard datasets (MNIST, Fashion-MNIST, CIFAR-10): "
                                       "download with checksums, check, list")
    dsub = data.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="fetch a dataset, verifying MD5s (files already verified are kept)")
    dl.add_argument("name", choices=list(datasets.STANDARD))
    dl.add_argument("--root", help=_ROOT_HELP)
    dl.add_argument("--mirror", help="a base URL replacing the canonical one (file names are appended)")
    dl.add_argument("--timeout", type=float, default=60, help="seconds per network operation (default 60)")
    dl.add_argument("--quiet", action="store_true", help="no progress lines")
    ck = dsub.add_parser("check", help="load a dataset and print its shapes and class counts")
    ck.add_argument("name", choices=list(datasets.STANDARD))
    ck.add_argument("--root", help=_ROOT_HELP)
    ls = dsub.add_parser("list", help="the standard datasets, their directories, and whether they are present")
    ls.add_argument("--root", help=_ROOT_HELP)
    data.set_defaults(func=cmd_data)


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
    aud = sub.add_parser("audit", help="the standard AutoAttack afresh on a study's saved checkpoints: is any "
                                       "reported robust accuracy overstated?")
    aud.add_argument("study")
    aud.add_argument("--profile", choices=PROFILES, default="quick", help="whose runs (default: quick, the report's)")
    aud.add_argument("--arm", action="append", help="only this arm (repeatable; default: every arm with attacks)")
    aud.add_argument("--seed", action="append", type=int,
                     help="only this seed (repeatable; default: every seed); the table is then named by the selection")
    aud.add_argument("--tolerance", type=float, default=None,
                     help="accuracy below the reported one still taken as agreement (default: 0.01)")
    aud.add_argument("--max-examples", type=int, default=None,
                     help="attack only the first N attacked examples (a quick look: no verdict)")
    aud.add_argument("--outputs", help="outputs directory (default: $STUDYLIB_OUTPUTS or <project>/outputs)")
    aud.add_argument("--data-root", help="where the standard datasets are (default: $STUDYLIB_DATA_ROOT or <project>/data)")
    aud.set_defaults(func=cmd_audit)
    check = sub.add_parser("check", help="validate a params file or a study without running")
    check.add_argument("target", help="a params file, or a study name")
    check.add_argument("--profile", choices=PROFILES, default=None)
    check.set_defaults(func=cmd_check)
    lst = sub.add_parser("list", help="studies, techniques with defaults and ranges, datasets, scenarios, profiles")
    lst.set_defaults(func=cmd_list)
    _add_data_parser(sub)
    _add_plugin_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    refused = _use_plugins(args)
    if refused is not None:
        return refused
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _err("interrupted (finished run records are kept)", 130)
    except (RecordError, RuntimeError, OSError) as e:
        return _err(f"{type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main())
