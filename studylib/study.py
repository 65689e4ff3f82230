"""Run a study — every (arm, seed) of a :class:`StudyConfig` — resuming from finished records, and
read its results back from disk as pandas tables.

    >>> cfg = studylib.load_study("adversarial", profile="smoke")
    >>> results = studylib.Study(cfg).run()
    >>> results.table()
"""

from __future__ import annotations

import contextlib
import os
import traceback
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from . import checkpoint as ckpt, kernels, paths
from .config import RunConfig, StudyConfig
from .data import Data, check_available, make_data
from .evaluate import scorecard
from .models import count_parameters, rebuild
from .records import RunRecord, atomic_write_json, environment
from .techniques import plugins
from .train import fit, resolve_device, trajectory_key

HEADLINE = ["clean_acc", "robust_acc", "corruption_acc", "balanced_acc", "worst_group_acc", "ece", "gen_gap"]


@dataclass
class RunResult:
    config: RunConfig
    record: RunRecord

    @cached_property
    def metrics(self) -> dict:
        return self.record.metrics()

    @cached_property
    def history(self) -> list[dict]:
        return self.record.history()


class Study:
    """Executes the runs of ``cfg`` that have no finished record and collects all of them."""

    def __init__(self, cfg: StudyConfig, outputs=None, progress: bool | None = None):
        self.cfg = cfg
        self.outputs = paths.outputs_dir(outputs)
        # None: a bar per run unless STUDYLIB_PROGRESS=0 (the test suite and batch notebook kernels,
        # studylib.execute.kernel_env, set it: a widget bar per epoch floods a kernel's output channel, and nbval, which
        # reads that channel only after a cell ends, can lose the cell's end message in the flood)
        self.progress = os.environ.get("STUDYLIB_PROGRESS", "1") != "0" if progress is None else progress
        self.dir = self.outputs / "studies" / cfg.study / cfg.hash()
        self.device = resolve_device(cfg.device)

    def run(self, raise_on_failure: bool = True) -> "StudyResults":
        """Train and score every run not yet done. A failing run is recorded as failed with its
        reason; with ``raise_on_failure`` the error is re-raised after the other runs finished."""
        cfg = self.cfg
        self.kernels = kernels.use(self.device)  # the pinned CPU kernels, or one error before any run
        check_available(cfg.data)  # a missing or broken dataset file stops here, before any run starts
        atomic_write_json(self.dir / "config.json", cfg.model_dump(mode="json"))
        runs = cfg.runs()
        atomic_write_json(self.dir / "runs.json", [{"arm": r.arm, "seed": r.seed, "hash": r.hash(),
                                                    "record": str(RunRecord.for_config(r, self.outputs).dir)}
                                                   for r in runs])
        failures = []
        self._tried: set[Path] = set()  # runs this call trained or tried: one that failed is not retried in it
        data_cache: dict[int, Data] = {}
        # A run in training elsewhere (another process, or another study wanting the same content)
        # is put off while this study trains its other runs, then waited for and reused. Runs that
        # differ only in their selection rule (train.trajectory_key) and are free share one fit.
        pending = [(rc, RunRecord.for_config(rc, self.outputs)) for rc in runs]
        self._keys = {rec.dir: trajectory_key(rc) for rc, rec in pending}
        for wait in (False, True):
            put_off = []
            for i, (rc, rec) in enumerate(pending):
                if rec.done or rec.dir in self._tried:
                    continue
                with rec.lock(wait=wait) as taken, contextlib.ExitStack() as held:
                    if not taken:
                        put_off.append((rc, rec))
                    elif not rec.done:
                        group = [(rc, rec), *self._free_siblings(rc, rec, pending[i + 1:], held)]
                        self._run_or_reuse(group, data_cache, failures)
            pending = put_off
        if failures and raise_on_failure:
            raise RuntimeError("; ".join(failures))
        results = StudyResults(cfg, self.outputs)
        other = results.other_kernels(self.kernels)
        if other:  # finished earlier under other kernels: kept (never retrained over), but said
            warnings.warn(f"{len(other)} finished run(s) of {cfg.study} were computed with other CPU kernels "
                          f"than this process's ({other[0]}); their numbers may differ from a rerun here",
                          stacklevel=2)
        return results

    def _free_siblings(self, rc: RunConfig, rec: RunRecord, later: list, held: contextlib.ExitStack) -> list:
        """The runs after ``rc`` that one fit with it serves (same seed and trajectory key), not
        done, and whose lock this process takes at once (held until ``held`` closes)."""
        key = self._keys[rec.dir]
        if key is None:
            return []
        out = []
        for other, other_rec in later:
            if (other.seed == rc.seed and not other_rec.done and other_rec.dir not in self._tried
                    and self._keys[other_rec.dir] == key):
                if held.enter_context(other_rec.lock(wait=False)) and not other_rec.done:
                    out.append((other, other_rec))
        return out

    def _run_or_reuse(self, group: list, data_cache: dict, failures: list) -> None:
        self._tried.update(rec.dir for _, rec in group)
        # the same computation, done for another study on this kind of device: copied, not retrained
        todo = []
        for rc, rec in group:
            twin = rec.twin(self.device.type, self.kernels)
            if twin is not None:
                try:
                    rec.copy_from(twin, rc.model_dump(mode="json"))
                    continue
                except Exception:  # the other record went away or is unreadable: train it here instead
                    pass
            todo.append((rc, rec))
        if not todo:
            return
        try:
            seed = todo[0][0].seed
            if seed not in data_cache:
                data_cache[seed] = make_data(todo[0][0].data, seed).to(self.device)
            self._run_one(todo[0][0], todo[0][1], data_cache[seed], siblings=todo[1:], failures=failures)
        except Exception as e:  # the data or the fit: every run of the group, recorded, then raised or reported
            for rc, rec in todo:
                if not rec.done:
                    _failed(rc, rec, e, failures)

    def _run_one(self, rc: RunConfig, rec: RunRecord, data: Data, siblings=(), failures: list | None = None) -> None:
        """Fit ``rc`` (with ``siblings``, (config, record) pairs of its trajectory key: one fit for
        all) and record each run. A run whose scoring or record fails is marked failed and listed in
        ``failures`` while the others are recorded (raised at once when ``failures`` is None)."""
        members = [(rc, rec), *siblings]
        for c, r in members:  # where the technique came from: built-in, or a plugin's module, distribution and version
            r.start(c.model_dump(mode="json"), {**environment(self.device), "seed": c.seed,
                                               "technique": plugins.origin(c.technique)})
        result = fit(rc, data, progress=self.progress, checkpoint=rec.checkpoint, siblings=[c for c, _ in siblings])
        rng = ckpt.rng_state(self.device)  # each run is scored from the RNG state its fit ended in
        # the first run last: the fit's checkpoint is in its record, removed when that one is done
        for (c, r), res in reversed(list(zip(members, [result, *result.siblings]))):
            ckpt.set_rng_state(rng, self.device)
            try:
                self._record(c, r, res, data, shared_with=[o.arm for o, _ in members if o is not c])
            except Exception as e:
                if failures is None:
                    raise
                _failed(c, r, e, failures)

    def _record(self, rc: RunConfig, rec: RunRecord, result, data: Data, shared_with: list[str]) -> None:
        card = scorecard(result.model, data, rc, result.technique)
        card["metrics"].update(result.technique.score(result.model, data))
        selected = result.history[result.best_epoch - 1]
        fit_summary = {"train_seconds": result.train_seconds, "seconds_per_epoch": result.seconds_per_epoch,
                       "val_seconds": result.val_seconds,
                       "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                       "stopped_early": result.stopped_early, "selection_rule": result.selection_rule,
                       "sampler": result.sampler, "trained_examples": result.trained_examples,
                       # the runs of this study the same fit served (their costs are this one's, once)
                       "shared_fit_with": shared_with,
                       # validation numbers of the selected epoch: what hyperparameter selection may use
                       "selected_val": {k: v for k, v in selected.items() if k.startswith("val_")}}
        card["metrics"].update({k: v for k, v in fit_summary.items() if isinstance(v, (int, float))},
                               n_params=count_parameters(result.model))
        metrics = {**card, "fit": fit_summary, "diagnostics": result.diagnostics,
                   "scenario": data.description, "scenario_info": data.info}
        rec.save(metrics, result.history, result.model.state_dict())
        rec.mark_done()


def _failed(rc: RunConfig, rec: RunRecord, error: Exception, failures: list) -> None:
    """Record ``rc`` as failed with ``error`` (called while it is handled) and list it."""
    reason = f"{type(error).__name__}: {error}"
    rec.mark_failed(reason + "\n" + traceback.format_exc(limit=8))
    failures.append(f"{rc.arm} seed {rc.seed}: {reason}")


class StudyResults:
    """A study's finished runs, read from their records."""

    def __init__(self, cfg: StudyConfig, outputs=None):
        self.cfg = cfg
        self.outputs = paths.outputs_dir(outputs)
        self.runs = []
        self.failed = []
        for rc in cfg.runs():
            rec = RunRecord.for_config(rc, self.outputs)
            if rec.done:
                self.runs.append(RunResult(rc, rec))
            elif rec.failed:
                self.failed.append((rc, rec.failure()["reason"].splitlines()[0]))

    @property
    def arms(self) -> list[str]:
        return list(self.cfg.arms)

    def table(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """One row per run: the headline metrics, training cost and its multiple of ERM's."""
        rows = []
        for r in self.runs:
            m = r.metrics["metrics"]
            row = {"arm": r.config.arm, "technique": r.config.technique, "seed": r.config.seed}
            row.update({k: m.get(k) for k in (metrics or HEADLINE)})
            row.update(train_seconds=m["train_seconds"], epochs=m["epochs_run"], best_epoch=m["best_epoch"])
            rows.append(row)
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        # the baseline is the arm named "erm" when there is one (not erm_l2, erm_es, ...)
        baseline = df.arm == "erm" if (df.arm == "erm").any() else df.technique == "erm"
        if baseline.any():
            # cost per epoch relative to ERM's, so early stopping does not hide a technique's price
            per_epoch = df.train_seconds / df.epochs
            erm_per_epoch = per_epoch[baseline].groupby(df.seed).mean()
            df["cost_x_erm"] = per_epoch / df.seed.map(erm_per_epoch)
        return df

    def summary(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """Mean ± std over seeds per arm (n seeds)."""
        df = self.table(metrics)
        if df.empty:
            return df
        numeric = [c for c in df.columns if c not in ("arm", "technique", "seed")]
        g = df.groupby("arm", sort=False)[numeric]
        out = g.mean().round(4)
        if df.seed.nunique() > 1:
            out = out.join(g.std().round(4).add_suffix("_std"))
        out.insert(0, "n", g.size())
        return out

    def robust_curve(self) -> pd.DataFrame:
        """Long table: arm, seed, eps, attack, acc."""
        return pd.DataFrame([{"arm": r.config.arm, "seed": r.config.seed, **row}
                             for r in self.runs for row in r.metrics["robust_curve"]])

    def corruptions(self) -> pd.DataFrame:
        return pd.DataFrame([{"arm": r.config.arm, "seed": r.config.seed, **row}
                             for r in self.runs for row in r.metrics["corruptions"]])

    def history(self) -> pd.DataFrame:
        return pd.DataFrame([{"arm": r.config.arm, "seed": r.config.seed, **row}
                             for r in self.runs for row in r.history])

    def frame(self) -> pd.DataFrame:
        """One row per finished run, as :func:`studylib.aggregate.load_runs` reads it."""
        from .aggregate import run_row

        return pd.DataFrame([run_row(r.record.config(), r.metrics, r.record.dir) for r in self.runs])

    def claims(self, method: str = "bh") -> pd.DataFrame:
        """This study's claims with verdicts (:func:`studylib.claims.claims`), computed on what the
        synthesis report computes them on: every finished record of this study and profile in the
        outputs (a study run in several scenarios, e.g. ELR under symmetric and asymmetric noise, is
        one family), on the report seeds where there are any. So the verdict printed here is the one
        the summary prints."""
        from .aggregate import load_runs, report_seeds
        from .claims import claims

        runs = load_runs(self.outputs, study=self.cfg.study)
        runs = runs[runs.profile == self.cfg.profile] if len(runs) else runs
        return claims(report_seeds(runs)[0] if len(runs) else runs, method=method)

    def flags(self) -> list[str]:
        return [f"{r.config.arm} seed {r.config.seed}: {f}" for r in self.runs for f in r.metrics["flags"]]

    def other_kernels(self, settings: dict | None = None) -> list[str]:
        """The runs computed with other CPU kernels than ``settings`` (default: this process's),
        or made before the kernels were recorded: ``"<arm> seed <seed>: <what differs>"``."""
        want = kernels.identity(settings or kernels.settings())
        out = []
        for r in self.runs:
            have = kernels.identity(r.record.env())
            if have != want:
                what = "kernels not recorded" if have is None else ", ".join(
                    f"{k} {have[k]} (here {want[k]})" for k in want if have[k] != want[k])
                out.append(f"{r.config.arm} seed {r.config.seed}: {what}")
        return out

    def run(self, arm: str, seed: int | None = None) -> RunResult:
        seed = self.cfg.seeds[0] if seed is None else seed
        for r in self.runs:
            if r.config.arm == arm and r.config.seed == seed:
                return r
        raise KeyError(f"no finished run for arm {arm!r} seed {seed}")

    def data(self, seed: int | None = None) -> Data:
        """The run's data (rebuilt deterministically from the config, on CPU)."""
        seed = self.cfg.seeds[0] if seed is None else seed
        return make_data(self.cfg.data, seed)

    def model(self, arm: str, seed: int | None = None):
        """The selected model of a run, rebuilt from its config and weights (CPU, eval mode)."""
        r = self.run(arm, seed)
        data = self.data(r.config.seed)
        return rebuild(r.config.model, data, r.record.state_dict())

    @property
    def directory(self) -> Path:
        return self.outputs / "studies" / self.cfg.study / self.cfg.hash()
