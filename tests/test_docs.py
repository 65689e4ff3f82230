"""The documentation against the kit: every `studylib ...` and `make ...` command shown in README.md and
docs/*.md (code blocks and inline code) names a subcommand, flags and targets that exist, the cheap ones
run, and every relative link and image resolves to a file of the repository (and a heading, for an anchor).
Each subcommand's --help is parsed once."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from studylib.cli import build_parser
from studylib.config import study_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMAND = re.compile(r"(?:^|[\s;&|(])((?:studylib|make)\s+[^\n]*)")
PLACEHOLDER = re.compile(r"[<>\[\]…]|\.\.\.|^[A-Z]+$")  # <study>, [--profile P], ..., N


def _code(text: str) -> list[str]:
    """The shell code of a markdown text: lines of shell code blocks (comments cut) and inline code spans."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang.lower() in SHELL_BLOCKS:
            out += [re.sub(r"\s#.*$", "", line) for line in body.splitlines()]
    prose = FENCE.sub("", text)
    return out + INLINE.findall(prose)


def _commands(tool: str) -> list[tuple[str, str]]:
    """(file, command) for every command of ``tool`` shown in the docs, up to the end of its command."""
    found = []
    for doc in DOCS:
        for code in _code(doc.read_text()):
            for m in COMMAND.finditer(code):
                cmd = re.split(r"\s(?:&&|\|\||[|;#])\s|\s*\\$", m.group(1))[0].strip()
                if cmd.split()[0] == tool:
                    found.append((doc.relative_to(ROOT).as_posix(), cmd))
    return found


def _tokens(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:
        return cmd.split()


@functools.cache
def _subparsers() -> dict:
    """{"run": parser, ..., "data download": parser, ...} from the command's own argparse tree."""
    def walk(parser, prefix):
        out = {}
        for action in parser._actions:
            for name, sub in (getattr(action, "choices", None) or {}).items() if action.nargs == "A..." else ():
                key = f"{prefix} {name}".strip()
                out[key] = sub
                out.update(walk(sub, key))
        return out
    return walk(build_parser(), "")


@functools.cache
def _help(sub: str) -> str:
    """The --help text of one subcommand, from the installed command (once per subcommand)."""
    done = subprocess.run([sys.executable, "-m", "studylib.cli", *sub.split(), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _subcommand(args: list[str]) -> str:
    subs = _subparsers()
    sub = args[0] if args else ""
    if len(args) > 1 and f"{sub} {args[1]}" in subs:
        sub = f"{sub} {args[1]}"
    return sub


STUDYLIB = _commands("studylib")
MAKE = _commands("make")


def test_the_docs_show_the_commands_they_should():
    shown = {c for _, c in STUDYLIB} | {c for _, c in MAKE}
    assert len(STUDYLIB) > 30 and len(MAKE) > 10
    for needed in ("make study", "make test", "make study PROFILE=smoke", "make install", "make clean-outputs",
                   "studylib sweep full"):
        assert any(c == needed or c.startswith(needed + " ") for c in shown), needed
    assert any("arms." in c and c.endswith(" null") for c in shown)  # -p arms.X null


@pytest.mark.parametrize("where,cmd", STUDYLIB, ids=[f"{w}: {c}" for w, c in STUDYLIB])
def test_every_studylib_command_shown_exists(where, cmd):
    args = _tokens(cmd)[1:]
    if not args or PLACEHOLDER.search(args[0]):
        return  # `studylib` alone, or `studylib <sub>`
    sub = _subcommand(args)
    assert sub in _subparsers(), f"{where}: `{cmd}`: no subcommand {sub!r}"
    nested = any(k.startswith(sub + " ") for k in _subparsers())
    if nested and len(args) > 1 and not PLACEHOLDER.search(args[1]) and not args[1].startswith("-"):
        pytest.fail(f"{where}: `{cmd}`: {sub} has no subcommand {args[1]!r}")
    text = _help(sub)
    flags = {f for f in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text)}
    for arg in args[len(sub.split()):]:
        if arg.startswith("-") and not re.fullmatch(r"-[\d.]+", arg):
            flag = arg.split("=", 1)[0]
            assert flag in flags, f"{where}: `{cmd}`: {sub} has no flag {flag}"
    positional = [a for a in args[len(sub.split()):] if not a.startswith("-")]
    if sub in ("run", "audit") and positional and not PLACEHOLDER.search(positional[0]):
        assert positional[0] in study_names(), f"{where}: `{cmd}`: no study {positional[0]!r}"
    if sub == "sweep" and positional and not PLACEHOLDER.search(positional[0]) and "." not in positional[0]:
        assert (ROOT / "params" / "sweeps" / f"{positional[0]}.yaml").exists(), f"{where}: `{cmd}`: no such sweep"


CHEAP = sorted({c for _, c in STUDYLIB if not PLACEHOLDER.search(c) and "~" not in c
                and (_tokens(c)[1:] == ["list"] or (_tokens(c)[1:2] == ["check"] and len(_tokens(c)) > 2)
                     or "--help" in c)})


@pytest.mark.parametrize("cmd", CHEAP)
def test_the_cheap_commands_run(cmd, tmp_path):
    done = subprocess.run([sys.executable, "-m", "studylib.cli", *_tokens(cmd)[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`{cmd}`: {done.stderr[-1000:]}"
    assert done.stdout.strip()


def test_cheap_commands_are_there():
    assert any(c.startswith("studylib list") for c in CHEAP) and any(c.startswith("studylib check") for c in CHEAP)


@functools.cache
def _makefile_variables() -> set:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, re.M))


@pytest.mark.parametrize("where,cmd", MAKE, ids=[f"{w}: {c}" for w, c in MAKE])
def test_every_make_command_shown_exists(where, cmd):
    args = _tokens(cmd)[1:]
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    assert targets, f"{where}: `{cmd}`: no target"
    for var in (a.split("=", 1)[0] for a in args if "=" in a):
        assert var in _makefile_variables(), f"{where}: `{cmd}`: the Makefile has no variable {var}"
    done = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{where}: `{cmd}`: {done.stderr[-500:]}"


def test_another_torch_spec_reinstalls_torch():
    """The install stamp follows TORCH_SPEC: on an installed .venv another spec still reinstalls torch."""
    spec = "torch==0.0.0 --index-url https://example.invalid/whl"
    done = subprocess.run(["make", "-n", "install", f"TORCH_SPEC={spec}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip uninstall --quiet --yes torch" in done.stdout and f"pip install --quiet {spec}" in done.stdout


# -- links ----------------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img[^>]+src=\"([^\"]+)\"")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set:
    text = FENCE.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def _links() -> list[tuple[Path, str]]:
    out = []
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text())
        text = INLINE.sub("", text)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if not re.match(r"[a-z]+:", target):
                out.append((doc, target))
    return out


def test_every_relative_link_and_image_resolves():
    links = _links()
    assert len(links) > 20
    broken = []
    for doc, target in links:
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.is_file() or ROOT not in dest.parents:
            broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {Path(t.partition("#")[0]).name for d, t in _links() if d.name == "README.md"}
    pages = {f"{name}.md" for name in ("results", "methodology", "configuration", "scorecard", "gpu-full-profile",
                                       "sweeps-and-clusters", "adding-a-technique", "performance", "contributing",
                                       "reliability", "scenarios")}
    assert pages - linked == set(), pages - linked
