"""The floors of the house: the command module (cli.py) on top, imported by nothing in studylib; the
config, the technique registry, `studylib check` and `studylib list` without torch or the other heavy
libraries (structural checks: which modules get imported, never how long it takes)."""

import ast
import subprocess
import sys
from pathlib import Path

import studylib
from studylib import paths

PACKAGE = Path(studylib.__file__).parent
HEAVY = ("torch", "pandas", "papermill", "scipy", "sklearn", "matplotlib", "art", "nbformat")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def _imports_cli(path: Path) -> list[str]:
    """The lines of ``path`` that import the command module, at module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            absolute = module if node.level == 0 else ".".join(
                (path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level] + ((module,) if module else ())))
            if absolute == "studylib.cli" or (absolute == "studylib" and any(a.name == "cli" for a in node.names)):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Import) and any(a.name == "studylib.cli" for a in node.names):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_module_of_studylib_imports_the_command_module():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "cli.py" for hit in _imports_cli(path)]
    assert offenders == [], offenders


def test_importing_every_module_leaves_the_command_module_unimported():
    code = """
import importlib, pkgutil, sys
import studylib
from studylib import paths
names = sorted(m.name for m in pkgutil.walk_packages(studylib.__path__, "studylib.") if m.name != "studylib.cli")
for name in names:
    importlib.import_module(name)
assert "studylib.sweep" in sys.modules and "studylib.execute" in sys.modules and "studylib.datasets" in sys.modules
print("studylib.cli" in sys.modules)
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_config_and_registry_import_no_heavy_library():
    proc = _python(f"""
import sys
import studylib, studylib.config, studylib.techniques
studylib.load_study("adversarial", "smoke").runs()
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


_COMMAND = """
import sys
from studylib import cli
code = cli.main(sys.argv[1:])
print(sorted(m for m in {heavy!r} if m in sys.modules))
sys.exit(code)
""".format(heavy=HEAVY)


def test_check_refuses_a_bad_params_file_with_exit_2_naming_the_field_without_torch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: adversarial\narms:\n  pgd_at:\n    hparams: {steps: 0}\n")
    proc = _python(_COMMAND, "check", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("studylib: error: arms.pgd_at") and "steps" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout.strip() == "[]"


def test_check_and_list_answer_without_torch():
    for argv in (["check", str(paths.params_dir() / "adversarial.yaml")], ["list"]):
        proc = _python(_COMMAND, *argv)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "[]", (argv, proc.stdout[-500:])


def test_the_public_api_still_offers_study():
    assert studylib.Study.__module__ == "studylib.study" and "Study" in dir(studylib)
