"""Executing notebooks into records: a study's notebook into its study record, and the synthesis
notebook into the report.

    execute_study("adversarial", profile="quick")   # validate, then papermill into the record
    build_report()                                   # outputs/report/synthesis.html

The layer under the command (``cli.py``) and the sweeps (:mod:`studylib.sweep`): problems
are exceptions — :class:`~studylib.config.ConfigError` and :class:`~studylib.datasets.DataError`
before any work, :class:`NotebookFailed` when a cell raised — which the command prints in one line
and a sweep records. Kernels talk to this process over IPC (Unix sockets in a private temporary
directory) rather than TCP on localhost: no port is opened, and ipykernel does not warn about
unencrypted TCP on every start. The kernel's own log (not the notebook's output) is kept to
critical messages: jupyter_client interrupts a kernel before shutting it down, and a kernel caught
handling a late message logged "KeyboardInterrupt caught in kernel" into the sweep's output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .config import ConfigError, load_study
from .records import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["NotebookFailed", "StudyExecution", "build_report", "execute_study", "kernel_options"]


class NotebookFailed(RuntimeError):
    """A notebook raised in one of its cells. Whatever it finished (run records, the executed copy
    of the notebook) is kept; the study record is not marked done."""

    def __init__(self, notebook: str, cell, ename: str, evalue: str, executed: Path | None = None):
        self.notebook, self.cell, self.ename, self.evalue, self.executed = notebook, cell, ename, evalue, executed
        lines = str(evalue or "").strip().splitlines()
        self.first_line = lines[0] if lines else ""
        super().__init__(f"{notebook} failed in cell {cell}: {ename}: {self.first_line}")

    @property
    def reason(self) -> str:
        """One line for a sweep's status: where and what."""
        return f"notebook cell {self.cell}: {self.ename}: {self.first_line}"


@dataclass(frozen=True)
class StudyExecution:
    """What :func:`execute_study` did."""

    record: Path         # the study record: config, runs.json, notebook.ipynb, done
    executed: bool       # False: the record was already done and nothing ran
    seconds: float       # the notebook's execution time (this call's, or the recorded one)


@contextlib.contextmanager
def kernel_options():
    """Keyword arguments for ``papermill.execute_notebook`` that start the kernel on IPC transport,
    its sockets in a fresh private directory removed afterwards (a unique path per execution, so
    concurrent kernels never pick the same socket). Elsewhere than on POSIX: TCP, as by default.
    The kernel logs critical messages only (cell errors reach the executed notebook as before)."""
    quiet = {"extra_arguments": ["--IPKernelApp.log_level=CRITICAL"]}
    if os.name != "posix":
        yield quiet
        return
    from traitlets.config import Config

    sockets = tempfile.mkdtemp(prefix="studylib-kernel-")  # mode 0700: only this user can connect
    try:
        yield {**quiet, "config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "ipc")}})}
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


@contextlib.contextmanager
def kernel_env():
    """The environment a batch kernel inherits, for this execution only (the caller's own environment,
    e.g. a JupyterLab session that called a sweep, is restored after): ``STUDYLIB_BATCH=1``
    (explorers show a static view, no widgets: :mod:`studylib.explore`) and ``STUDYLIB_PROGRESS=0``
    (no per-run bars in the kernel: the sweep shows its own, and a widget bar per epoch floods the
    kernel's output channel)."""
    saved = {k: os.environ.get(k) for k in ("STUDYLIB_BATCH", "STUDYLIB_PROGRESS")}
    os.environ.update(STUDYLIB_BATCH="1", STUDYLIB_PROGRESS="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(notebook: Path, executed: Path, parameters: dict, progress: bool, label: str) -> None:
    """papermill ``notebook`` → ``executed``, with the kit's kernel options; a cell's exception
    becomes :class:`NotebookFailed`."""
    import papermill as pm

    with kernel_env(), kernel_options() as options:
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters=parameters, kernel_name="python3",
                                progress_bar=progress, cwd=str(paths.notebooks_dir()), **options)
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(label, e.exec_count, e.ename, e.evalue, executed) from None


def execute_study(study: str, profile: str | None = None, overrides: dict | None = None,
                  params_file: str | None = None, outputs=None, force: bool = False,
                  progress: bool = True) -> StudyExecution:
    """Validate, then execute the study notebook with papermill into its record; a record already
    done is left alone unless ``force``. Raises :class:`ConfigError` or :class:`DataError` (one
    line) before any work on a bad config or a missing dataset file, :class:`NotebookFailed` when a
    cell raised."""
    from .data import check_available

    cfg = load_study(study, profile, overrides, params_file)  # fails fast, naming the field
    check_available(cfg.data, read=False)  # a missing dataset file: one line, before any work
    outputs = paths.outputs_dir(outputs)
    record = outputs / "studies" / cfg.study / cfg.hash()
    if (record / "done").exists() and not force:
        return StudyExecution(record, False, float(read_json(record / "done").get("seconds", 0.0)))
    notebook = paths.notebooks_dir() / f"{study}.ipynb"
    if not notebook.exists():
        raise ConfigError(f"study: no notebook {notebook}")
    record.mkdir(parents=True, exist_ok=True)
    (record / "done").unlink(missing_ok=True)
    parameters = {"profile": cfg.profile, "overrides": dict(overrides or {}),
                  "params_file": str(Path(params_file).resolve()) if params_file else None,
                  "outputs": str(outputs)}
    t0 = time.perf_counter()
    _execute(notebook, record / "notebook.ipynb", parameters, progress, "the notebook")
    seconds = time.perf_counter() - t0
    atomic_write_json(record / "done", {"seconds": seconds, "parameters": parameters})
    return StudyExecution(record, True, seconds)


def build_report(outputs=None, progress: bool = True, profile: str | None = None) -> Path:
    """Execute the synthesis notebook over every run record and export it to HTML. Returns the
    HTML path. Reads records only: nothing is retrained. Raises :class:`NotebookFailed`."""
    import nbformat

    outputs = paths.outputs_dir(outputs)
    report_dir = outputs / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    executed = report_dir / "synthesis.ipynb"
    _execute(paths.notebooks_dir() / "synthesis.ipynb", executed,
             {"outputs": str(outputs), "report_dir": str(report_dir), "profile": profile}, progress,
             "the synthesis notebook")
    html = report_dir / "synthesis.html"
    atomic_write_bytes(html, static_html(nbformat.read(executed, as_version=4)).encode())
    return html


#: cells tagged so are for the live notebook only (ipywidgets need a kernel): left out of the HTML
LIVE_ONLY_TAG = "live-only"
#: tables scroll inside the page instead of widening it; readable fonts
REPORT_CSS = """<style>
.jp-RenderedHTMLCommon table, .jp-OutputArea-output table { display: block; overflow-x: auto; max-width: 100%;
  font-size: 12px; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal; }
.jp-OutputArea-output pre { white-space: pre-wrap; font-size: 12.5px; }
body { max-width: 1200px; margin: auto; }
</style>"""


def static_html(nb) -> str:
    """A report for readers, without a kernel: no code, no In/Out prompts, no cells that only work
    live (widgets), tables that fit the page width."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    exporter = HTMLExporter()
    exporter.exclude_input = True  # the code is in the executed notebook beside it
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={LIVE_ONLY_TAG}), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return body.replace("</head>", REPORT_CSS + "\n</head>", 1)
