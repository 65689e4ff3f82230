"""Standard datasets from a data root, the CIFAR networks and the fast training path, on CPU.

Fixture files in the real formats (``fixtures.write_fixture``) stand in for MNIST, Fashion-MNIST
and CIFAR-10: every study's ``full`` profile must start on them and run a few steps.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import studylib as sl
from studylib import config, datasets, fixtures
from studylib.config import ConfigError, ModelConfig, load_study
from studylib.data import augment, make_data
from studylib.models import build_model, count_parameters
from studylib.sweep import run_sweep
from studylib.train import fit


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in datasets.STANDARD:
        fixtures.write_fixture(name, root)
    return root


@pytest.fixture
def with_root(data_root, monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(data_root))
    return data_root


# every full profile, a few steps: a narrow model (the architecture of the profile, fewer channels),
# one optimizer step, the cheapest evaluation, DEQ solver and probe budgets cut
TINY = {"seeds": [0], "train.max_steps": 1, "train.epochs": 1, "train.batch_size": 16, "train.track_size": 8,
        "train.select_steps": 1,
        "model.base_width": 8, "model.channels": [8, 8], "model.width": 16,
        "eval.attacks": ["fgsm", "pgd"], "eval.pgd_steps": 2, "eval.pgd_restarts": 1, "eval.max_examples": 8,
        "eval.corruptions": ["gaussian_noise", "rotation"], "eval.severities": [1]}


def _tiny(study: str) -> dict:
    cfg = load_study(study, "full", TINY)
    deq = {f"arms.{a}.hparams.{k}": v for a, arm in cfg.arms.items() if arm.technique == "deq"
           for k, v in (("probe_examples", 8), ("max_iter", 4), ("unroll_steps", 4))}
    # the adversarial arms' training attacks and fast AT's overfitting check: 2 steps on a few images
    steps = {f"arms.{a}.hparams.{k}": v for a in cfg.arms for k, v in (("steps", 2), ("co_check_steps", 2), ("co_check_size", 8))
             if k in cfg.run_config(a, 0).hparams}
    return {**TINY, **deq, **steps}


@pytest.mark.parametrize("study", config.study_names())
def test_every_full_profile_starts_on_the_standard_datasets_and_runs_a_few_steps(study, with_root, tmp_path):
    cfg = load_study(study, "full", _tiny(study))
    assert cfg.data.dataset in config.STANDARD_DATASETS
    results = sl.Study(cfg, outputs=tmp_path, progress=False).run()
    assert len(results.runs) == len(cfg.arms)
    for run in results.runs:
        m = run.metrics["metrics"]
        assert 0.0 <= m["clean_acc"] <= 1.0 and np.isfinite(m["robust_acc"])
        assert run.metrics["fit"]["epochs_run"] == 1
        assert run.config.data.dataset == cfg.data.dataset


def test_standard_splits_keep_the_official_test_set(with_root):
    x_train, y_train, x_test, y_test = datasets.load("cifar10")
    cfg = load_study("adversarial", "full").data
    data = make_data(cfg, seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.test) == len(y_test)
    assert torch.equal(data.test.x, torch.as_tensor(x_test).float() / 255)
    assert len(data.train) + len(data.val) == len(y_train)
    assert float(data.train.x.min()) >= 0 and float(data.train.x.max()) <= 1
    # the imbalance and label-noise transforms run on the standard sets too
    lt = make_data(cfg.model_copy(update={"scenario": config.Imbalance(ratio=5)}), seed=0)
    counts = torch.bincount(lt.train.y, minlength=10)
    assert counts[0] >= 5 * counts[9] > 0
    noisy = make_data(cfg.model_copy(update={"scenario": config.LabelNoise(rate=0.5)}), seed=0)
    assert bool(noisy.train.noisy.any()) and not bool((noisy.test.y != noisy.test.y_true).any())


def test_a_missing_data_root_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(tmp_path / "nowhere"))
    cfg = load_study("dro", "full", TINY)
    with pytest.raises(datasets.DataError, match="train-images-idx3-ubyte"):
        sl.Study(cfg, outputs=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out").exists()
    out = tmp_path / "cli-out"
    proc = subprocess.run([sys.executable, "-m", "studylib.cli", "run", "adversarial", "--profile", "full",
                           "--data-root", str(tmp_path / "nowhere"), "--outputs", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cifar" in lines[0] and "studylib data download cifar10" in lines[0], proc.stderr
    assert not out.exists()


def test_a_truncated_file_stops_the_study_before_its_first_run(data_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(data_root / "mnist", root / "mnist")
    images = root / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(root))
    with pytest.raises(datasets.DataError, match="train-images-idx3-ubyte.gz: truncated"):
        sl.Study(load_study("dro", "full", TINY), outputs=tmp_path / "out", progress=False).run()
    assert not (tmp_path / "out").exists()


def test_a_sweep_over_a_missing_dataset_is_refused_before_any_point_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(tmp_path / "nowhere"))
    sweep = tmp_path / "s.yaml"
    sweep.write_text("profile: smoke\njobs:\n  - study: dropout\n  - study: dro\n    overrides: {data.dataset: mnist}\n")
    with pytest.raises(datasets.DataError, match="dro.*train-images"):
        run_sweep(sweep, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out" / "runs").exists()


def test_crop_flip_takes_a_shifted_window_of_the_padded_image_and_flips_half():
    torch.manual_seed(0)
    x = torch.rand(256, 3, 8, 8)
    out = augment(x, "crop_flip", padding=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):  # every output is one of the 5×5 windows, mirrored or not
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 80 < flips < 176  # about half
    flipped = augment(x, "flip")
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2)) for i in range(len(x)))
    with pytest.raises(ValueError, match="augment"):
        augment(torch.rand(4, 1, 40), "flip")


def test_cifar_networks_shapes_and_sizes():
    x = torch.rand(4, 3, 32, 32)
    resnet = build_model(ModelConfig(arch="preact_resnet18"), (3, 32, 32), 10)
    assert resnet(x).shape == (4, 10)
    assert 11.1e6 < count_parameters(resnet) < 11.2e6  # PreActResNet-18 on CIFAR-10: 11.17M
    fast = build_model(ModelConfig(arch="resnet9", base_width=16), (3, 32, 32), 10)
    assert fast(x).shape == (4, 10) and count_parameters(fast) < 0.5e6
    assert build_model(ModelConfig(arch="resnet9", base_width=8), (1, 28, 28), 10)(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="model.arch: preact_resnet18 needs image inputs"):
        build_model(ModelConfig(arch="preact_resnet18"), (1, 40), 10)


def test_bf16_training_and_max_steps_on_cpu():
    cfg = load_study("adversarial", "smoke", {"train.precision": "bf16", "train.max_steps": 3, "train.epochs": 5,
                                               "data.augment": "flip"})
    rc = cfg.run_config("pgd_at", 0)
    data = make_data(rc.data, 0)
    result = fit(rc, data, progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["train_loss"])
    assert next(result.model.parameters()).dtype == torch.float32  # autocast, not a bf16 model


def test_config_refuses_what_cannot_work_naming_the_field():
    with pytest.raises(ConfigError, match="data.augment: flips and crops need images"):
        load_study("dropout", "smoke", {"data.dataset": "mnist1d", "data.augment": "crop_flip"})
    with pytest.raises(ConfigError, match="train.compile"):
        load_study("deq", "smoke", {"train.compile": True})
    with pytest.raises(ConfigError, match="data.dataset"):
        load_study("dropout", "smoke", {"data.dataset": "imagenet"})
    # where the files are is not part of a result: the hash ignores data.root
    a = load_study("adversarial", "full", {"data.root": "/a"})
    b = load_study("adversarial", "full", {"data.root": "/b"})
    assert a.hash() == b.hash() and a.run_config("erm", 0).hash() == b.run_config("erm", 0).hash()



def test_the_audit_reads_its_data_from_data_root(data_root, tmp_path, monkeypatch, capsys):
    """``studylib audit --data-root``, as ``run`` and ``sweep``: a run trained on a standard dataset is
    audited with the data found there; without it (and no $STUDYLIB_DATA_ROOT) one line names the file."""
    from studylib.cli import main

    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(data_root))
    cfg = load_study("dro", "full", TINY)
    cfg.arms = {"erm": cfg.arms["erm"]}
    sl.Study(cfg, outputs=tmp_path, progress=False).run()
    monkeypatch.setenv("STUDYLIB_DATA_ROOT", str(tmp_path / "nowhere"))
    args = ["audit", "dro", "--profile", "full", "--outputs", str(tmp_path), "--max-examples", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-images-idx3-ubyte" in err[0], err
    assert main([*args, "--data-root", str(data_root)]) == 0
    assert "audit: 1 runs, 0 overstated" in capsys.readouterr().out
