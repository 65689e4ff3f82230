"""Techniques from outside the kit: an installed distribution's entry point, a named file; the one
command that compares a technique with every baseline; broken plugins refused in one line."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studylib import load_study, versus
from studylib.config import SCENARIOS, ConfigError, check_params_file
from studylib.sweep import expand
from studylib.techniques import base, plugins, technique_names

BIN = Path(sys.executable).parent
NAME = "smooth_plugin_test"  # a name no built-in takes

TECHNIQUE = f'''
"""Label smoothing (Szegedy et al. 2016): (1 − ε)·CE + ε·mean_k(−log p_k)."""
from studylib._lazy import lazy_import
from studylib.techniques import Param, Technique, register

F = lazy_import("torch.nn.functional")


@register
class SmoothPluginTest(Technique):
    name = "{NAME}"
    summary = "label smoothing, installed from a throwaway distribution"
    home_scenario = "clean"
    home_metric = "clean_acc"
    params = {{"eps": Param(0.1, "smoothing", low=0.01, high=0.3, ge=0, lt=1)}}

    def loss(self, model, batch):
        log_p = F.log_softmax(model(batch.x), dim=1)
        return (1 - self.hp.eps) * F.nll_loss(log_p, batch.y) - self.hp.eps * log_p.mean(dim=1).mean()
'''


def _install(root: Path, dist: str, module: str, source: str, entry: str) -> Path:
    """A distribution with one module and a ``studylib.techniques`` entry point, installed by pip
    into ``root/site`` (a real install; the suite's own environment is left as it is: other test
    workers never see it). Returns the site directory, for PYTHONPATH."""
    pkg = root / dist
    pkg.mkdir(parents=True)
    (pkg / f"{module}.py").write_text(source)
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.3.1"
        [project.entry-points."studylib.techniques"]
        {entry}
        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, capture_output=True)
    return site


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    site = _install(root, "smooth-plugin-test", "smooth_plugin_test", TECHNIQUE,
                    f'{NAME} = "smooth_plugin_test:SmoothPluginTest"')
    env = {**os.environ, "PYTHONPATH": str(site), "STUDYLIB_PROGRESS": "0"}
    env.pop("STUDYLIB_PLUGINS", None)
    return env


def _studylib(env, *args):
    return subprocess.run([str(BIN / "studylib"), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def registry():
    """Plugins loaded in this process are removed afterwards (other tests iterate the registry)."""
    saved = (dict(base._REGISTRY), dict(base.REFUSED), dict(plugins._LOADED), dict(plugins._ORIGINS),
             os.environ.get(plugins.ENV))
    yield
    for target, value in zip((base._REGISTRY, base.REFUSED, plugins._LOADED, plugins._ORIGINS), saved):
        target.clear()
        target.update(value)
    if saved[4] is None:
        os.environ.pop(plugins.ENV, None)
    else:
        os.environ[plugins.ENV] = saved[4]


def test_an_installed_technique_is_listed_compared_with_erm_and_its_origin_recorded(installed, tmp_path):
    listed = _studylib(installed, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"  {NAME}: label smoothing, installed" in listed.stdout
    assert f"plugin {NAME}: entry point, module smooth_plugin_test, smooth-plugin-test 0.3.1" in listed.stdout

    # the one command, on the smoke profile cut to ERM and the technique, one scenario, two seeds
    drop = [x for arm in load_study("matrix", "smoke").arms if arm != "erm" for x in ("-p", f"arms.{arm}", "null")]
    out = tmp_path / "outputs"
    args = ["compare", NAME, "--profile", "smoke", "--scenario", "clean", *drop, "-p", "seeds", "[0, 1]",
            "-p", "train.epochs", "1", "-p", "data.n_train", "100", "-p", "eval.max_examples", "50",
            "-p", "eval.attacks", "[fgsm]", "--hparams", "eps=0.2", "--in-process", "--quiet", "--outputs", str(out)]
    done = _studylib(installed, *args)
    assert done.returncode == 0, done.stderr
    folder = out / "compare" / f"{NAME}-smoke"
    report = (folder / "report.md").read_text()
    assert "NO REPORT SEEDS" in report  # design seeds: nothing is a finding
    row = next(line for line in report.splitlines() if line.startswith(f"| {NAME} ← compared"))
    # its home claim is the one headline claim: a verdict against ERM, not "exploratory"
    verdict = row.split("|")[3].strip()
    assert verdict.split()[-1] in ("supported", "contradicted", "inconclusive"), row
    claim = next(line for line in report.splitlines() if line.startswith(f"- {NAME} — clean_acc in clean"))
    assert " vs erm " in claim and "costs " in claim
    import pandas as pd

    table = pd.read_csv(folder / "claims.csv")
    mine = table[table.technique == NAME].iloc[0]
    assert mine.baseline == "erm" and mine.n == 2 and mine.role == "headline"
    # every run records where its technique came from
    runs = [json.loads((d / "config.json").read_text()) | {"dir": d} for d in (out / "runs" / "matrix").iterdir()]
    mine_run = next(r for r in runs if r["technique"] == NAME)
    assert mine_run["hparams"] == {"eps": 0.2}
    origin = json.loads((mine_run["dir"] / "env.json").read_text())["technique"]
    assert origin["distribution"] == "smooth-plugin-test" and origin["version"] == "0.3.1"
    assert origin["module"] == "smooth_plugin_test" and origin["source"] == "entry point"
    erm_run = next(r for r in runs if r["technique"] == "erm")
    assert json.loads((erm_run["dir"] / "env.json").read_text())["technique"]["source"] == "built-in"

    # again: every run is reused, nothing is trained (the records' done markers are untouched)
    marks = {d: (d / "done").read_text() for d in (out / "runs" / "matrix").iterdir()}
    again = _studylib(installed, *args)
    assert again.returncode == 0, again.stderr
    assert {d: (d / "done").read_text() for d in (out / "runs" / "matrix").iterdir()} == marks


def test_compare_runs_the_five_matrix_scenarios_reusing_the_main_jobs_runs(tmp_path):
    plan = versus.plan("elr", "quick", {"beta": 0.5})
    assert [s["kind"] for s in plan.scenarios] == list(SCENARIOS)
    assert plan.arm == "elr_compared"  # the matrix's own elr arm stays as it is
    # the matrix itself has an equal-footing ERM twin for every arm (erm_sel_robust for the
    # adversarial ones, erm_cnn for the DEQ): compare adds none
    assert plan.twins == {}
    # the sweep file: one point per scenario, on the profile's report seeds
    spec = versus.write_sweep(plan, outputs=tmp_path).read_text()
    import yaml

    points = expand(yaml.safe_load(spec))
    assert len(points) == 5
    for scenario, cfg in zip(plan.scenarios, plan.configs()):
        assert cfg.seeds == [1000, 1001, 1002, 1003, 1004]
        main = load_study("matrix", "quick", {"data.scenario": scenario})  # the main job's matrix point
        for arm in main.arms:  # the same run records: reused, not retrained
            assert cfg.run_config(arm, 1000).hash() == main.run_config(arm, 1000).hash(), arm


BROKEN = [
    ("import studylib_no_such_module_xyz\n", "ModuleNotFoundError: No module named 'studylib_no_such_module_xyz'"),
    (TECHNIQUE.replace('    home_metric = "clean_acc"\n', ""), "does not declare home_metric"),
    (TECHNIQUE.replace(f'name = "{NAME}"', 'name = "dropout"'), "'dropout' is registered twice"),
    ("x = 1\n", "registers no technique"),
]


def test_a_broken_plugin_is_refused_in_one_line_and_the_built_ins_still_work(tmp_path, capsys, registry):
    from studylib import Study, cli

    before = technique_names()
    for i, (source, reason) in enumerate(BROKEN):
        bad = tmp_path / f"bad_plugin_{i}.py"
        bad.write_text(source)
        assert cli.main(["check", "matrix", "--profile", "smoke", "--plugin", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"plugin {bad} refused" in err and reason in err, err
        # refused as a whole: the registry as it was, the built-in of that name untouched
        assert technique_names() == before
        assert base.get_technique("dropout").__module__ == "studylib.techniques.dropout"
    # a built-in study still validates and runs
    assert cli.main(["check", "matrix", "--profile", "smoke"]) == 0
    cfg = load_study("matrix", "smoke", {"arms": {a: None for a in load_study("matrix", "smoke").arms if a != "erm"},
                                         "train.epochs": 1, "data.n_train": 100, "eval.max_examples": 20,
                                         "eval.attacks": ["fgsm"]})
    assert len(Study(cfg, outputs=tmp_path / "out", progress=False).run().runs) == 1


def test_an_installed_plugin_that_fails_is_named_and_the_built_ins_still_validate(tmp_path):
    site = _install(tmp_path, "broken-plugin-test", "broken_plugin_test", "raise ImportError('half installed')\n",
                    'broken_plugin_test = "broken_plugin_test"')
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("STUDYLIB_PLUGINS", None)
    listed = _studylib(env, "list")
    assert listed.returncode == 0
    refused = [line for line in listed.stdout.splitlines() if line.startswith("refused plugin")]
    assert len(refused) == 1 and "broken_plugin_test" in refused[0] and "ImportError: half installed" in refused[0]
    assert "  erm: " in listed.stdout
    assert _studylib(env, "check", "matrix", "--profile", "smoke").returncode == 0
    asked = _studylib(env, "compare", "broken_plugin_test", "--profile", "smoke")  # refused before anything runs
    assert asked.returncode == 2 and "half installed" in asked.stderr and asked.stderr.count("\n") == 1


def test_unknown_hyperparameters_of_a_plugin_are_refused_naming_the_field(tmp_path, registry):
    good = tmp_path / "good_plugin.py"
    good.write_text(TECHNIQUE)
    params = tmp_path / "mine.yaml"
    params.write_text(f"study: matrix\nplugins: [good_plugin.py]\narms:\n  mine: {{technique: {NAME}, hparams: {{eps: 0.05}}}}\n")
    cfg = check_params_file(params, "smoke")  # the params file's plugins: key, relative to the file
    assert cfg.arms["mine"].hparams == {"eps": 0.05}
    assert plugins.origin(NAME)["source"] == "file (params file)"
    with pytest.raises(ConfigError, match=r"arms\.mine: hparams\.epss: Extra inputs are not permitted"):
        load_study("matrix", "smoke", {"arms.mine": {"technique": NAME, "hparams": {"epss": 0.05}}})
    with pytest.raises(ConfigError, match=r"hparams\.eps: Input should be less than 1"):
        versus.plan(NAME, "smoke", {"eps": 1.5})


def test_the_worked_example_is_label_smoothing_as_pytorch_computes_it(registry):
    import torch

    from studylib.data import Batch

    example = Path(__file__).parents[1] / "examples" / "studylib-label-smoothing" / "studylib_label_smoothing.py"
    assert plugins.load(str(example)) == ["label_smoothing"]
    cls = base.get_technique("label_smoothing")
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    technique = cls(cls.hparams_model()(eps=0.2), None)
    got = technique.loss(model, Batch(x, y, torch.arange(8), y))
    assert torch.allclose(got, torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.2))
    log_p = torch.log_softmax(model(x), 1)  # by hand: (1 − ε)·CE + ε·mean_k(−log p_k)
    assert torch.allclose(got, 0.8 * -log_p[torch.arange(8), y].mean() + 0.2 * -log_p.mean())


def test_every_technique_declares_its_claim():
    assert all(not base.undeclared(base.get_technique(n)) for n in technique_names())


def test_the_scaffold_refuses_to_run_until_filled_in(tmp_path, registry):
    from studylib.scaffold import new_technique

    written = new_technique("my_method", tmp_path)
    assert [p.name for p in written] == ["my_method.py", "test_my_method.py", "my_method.params.yaml", "pyproject.toml"]
    assert 'my_method = "my_method:MyMethod"' in written[3].read_text()  # the entry point, for pip install -e
    assert "def loss" in written[0].read_text() and "NotImplementedError" in written[0].read_text()
    with pytest.raises(FileExistsError):
        new_technique("my_method", tmp_path)
    with pytest.raises(ValueError, match="taken"):
        new_technique("dropout", tmp_path)
    plugins.load(str(written[0]))  # it registers ...
    with pytest.raises(ConfigError, match="home_scenario '<scenario>'"):  # ... but no config takes it as it is
        load_study("matrix", "smoke", {"arms.mine": {"technique": "my_method"}})
    cls = base.get_technique("my_method")
    cls.home_scenario = "clean"
    with pytest.raises(NotImplementedError, match="no silent ERM"):
        cls(None, None).loss(None, None)
