"""``studylib new technique NAME``: a technique file with every hook documented, its test file
and the params snippet that puts it in the matrix. The placeholders raise NotImplementedError
until they are filled in: a scaffold never trains as ERM in disguise."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from . import paths

TECHNIQUE = '''"""{title}: <paper (venue year; official repository)>.

<the formula, e.g. loss = (1 − ε)·CE + ε·mean_k(−log p_k)>; <the official defaults>.

    studylib compare {name} --profile smoke     # a first look (design seeds)
    studylib compare {name}                     # against every technique, report seeds
"""

from studylib._lazy import lazy_import
from studylib.techniques import Param, Technique, register

torch = lazy_import("torch")  # imported on first use: `studylib list` and config checks need no torch
F = lazy_import("torch.nn.functional")


@register
class {cls}(Technique):
    """<paper>. <formula>. <official defaults>."""

    name = "{name}"
    summary = "<one line for `studylib list`>"
    # the claim: the scenario the technique was made for (clean, small_data, label_noise, imbalance,
    # spurious) and the scorecard metric it should improve there (clean_acc, robust_acc,
    # corruption_acc, balanced_acc, worst_group_acc; ece, gen_gap: lower is better)
    home_scenario = "<scenario>"
    home_metric = "<metric>"
    # hyperparameters: default, search range (low/high, log) and validity bounds (ge/le/gt/lt)
    params = {{"lam": Param(1.0, "<what it weighs>", low=0.1, high=10.0, log=True, ge=0)}}
    adversarial = False     # True: trains against an attack (its runs select on robust validation accuracy)
    sampler = "uniform"     # or "group_balanced" / "class_balanced"

    def loss(self, model, batch):
        """The training loss of one batch (a scalar tensor). batch.x, batch.y (labels as given,
        possibly noisy), batch.idx (into the training split), batch.group. self.hp.<param> holds
        the hyperparameters, self.ctx the run (n_train, num_classes, class_counts, epochs, device)."""
        raise NotImplementedError("{name}.loss: fill in the technique's loss (no silent ERM)")

    # Optional hooks (delete what you do not need; the defaults are ERM's):
    # def epoch_start(self, epoch): super().epoch_start(epoch)      # before each epoch (1-based)
    # def penalty(self, model): return None                          # a term added to the loss
    # def epoch_end(self, model, epoch): return {{}}                   # numbers, one history column each
    # def diagnostics(self): return {{}}                               # into metrics.json["diagnostics"]
    # def score(self, model, data): return {{}}                        # extra scorecard metrics
    # def train_index(self): return None                             # the training examples to step on
    # @classmethod
    # def model_overrides(cls, hp): return {{}}                        # model-config values, e.g. dropout
    # @classmethod
    # def train_defaults(cls, hp): return {{}}                         # train-config defaults
    # def eval_attacks(self, model, eval_cfg): return []             # extra attacks in the worst case
'''

TEST = '''"""{title}: the loss against values computed by hand, and one smoke comparison."""

import pytest
import torch

from studylib.techniques import get_technique
from studylib.data import Batch  # noqa: F401  (what the loop passes: x, y, idx, group)


def test_{name}_is_registered_with_its_claim():
    cls = get_technique("{name}")
    assert cls.home_scenario in ("clean", "small_data", "label_noise", "imbalance", "spurious")
    assert cls.home_metric


def test_{name}_loss_matches_the_formula():
    # build a tiny model and batch, compute the formula by hand, compare with Technique.loss
    pytest.fail("{name}: write the loss test (values computed by hand)")
'''

SNIPPET = '''# {name}: the matrix arm. A params file over the matrix study (`studylib check` this file;
# `studylib run matrix -f` it), or paste the arm under `arms:` in params/matrix.yaml for an in-tree
# technique. `studylib compare {name}` needs none of it: it adds the arm, its ERM twin and every scenario.
study: matrix
arms:
  {name}: {{technique: {name}, hparams: {{lam: 1.0}}, role: secondary}}
# an out-of-tree technique (a file, not an installed distribution) is named at the top of a params file:
# plugins: [path/to/{name}.py]
'''


PYPROJECT = '''# `pip install -e .` makes the kit find the technique through this entry point (name = the technique's name)
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "studylib-{dashed}"
version = "0.1.0"
description = "{title}: a technique for the Robust Training Study Kit"
requires-python = ">=3.10"
dependencies = ["studylib"]

[project.entry-points."studylib.techniques"]
{name} = "{name}:{cls}"

[tool.setuptools]
py-modules = ["{name}"]
'''


def new_technique(name: str, directory: str | Path | None = None) -> list[Path]:
    """Write ``<name>.py``, ``test_<name>.py`` and ``<name>.params.yaml``: into ``directory``
    (out of tree, with a ``pyproject.toml`` declaring the entry point, so that ``pip install -e
    <directory>`` makes it a plugin), or into the kit (``studylib/techniques/``, ``tests/``,
    ``params/snippets/``) when None. Refuses a name that is not an identifier or is taken, and any
    existing file."""
    from .techniques import technique_names

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(f"technique name {name!r}: lower-case letters, digits and _, starting with a letter")
    if name in technique_names():
        raise ValueError(f"technique name {name!r} is taken (studylib list)")
    cls = "".join(part.capitalize() for part in name.split("_"))
    title = name.replace("_", " ").capitalize()
    if directory is None:
        root = paths.project_root()
        targets = [root / "studylib" / "techniques" / f"{name}.py", root / "tests" / f"test_{name}.py",
                   root / "params" / "snippets" / f"{name}.yaml"]
    else:
        d = Path(directory)
        targets = [d / f"{name}.py", d / f"test_{name}.py", d / f"{name}.params.yaml", d / "pyproject.toml"]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise FileExistsError(f"not overwriting {', '.join(existing)}")
    for target, template in zip(targets, (TECHNIQUE, TEST, SNIPPET, PYPROJECT)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.format(name=name, cls=cls, title=title, dashed=name.replace("_", "-")))
    return targets
