"""Bad input is refused in one line naming the field, before anything trains."""

import subprocess
import sys

import pytest

from studylib import cli
from studylib.config import ConfigError, check_params_file, load_study, parse_overrides


def refused(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_quick_profile_resolves_every_arm():
    cfg = load_study("adversarial", "quick")
    assert list(cfg.arms) == ["erm", "fgsm_at", "pgd_at", "trades", "trades_sat"]
    run = cfg.run_config("pgd_at", 0)
    assert run.hparams == {"eps": 0.1, "steps": 7, "step_ratio": None, "random_start": True, "bn_mode": "eval"}
    # one selection rule for every arm of the adversarial study, ERM included (equal footing)
    assert run.train.select == "val_robust_acc" and cfg.run_config("erm", 0).train.select == "val_robust_acc"


def test_merge_order_profile_then_study_profile_then_overrides():
    assert load_study("adversarial", "smoke").train.epochs == 6  # study's smoke section
    assert load_study("adversarial", "full").train.epochs == 30
    assert load_study("adversarial", "full").seeds == [1000, 1001, 1002]  # global full profile: report seeds
    assert not load_study("adversarial", "quick").design_seeds and load_study("adversarial", "smoke").design_seeds
    cfg = load_study("adversarial", "smoke", {"train.epochs": "3", "arms.trades.hparams.beta": 1.5})
    assert cfg.train.epochs == 3 and cfg.arms["trades"].hparams["beta"] == 1.5


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("STUDYLIB_PROFILE", "full")
    assert load_study("adversarial").profile == "full"


@pytest.mark.parametrize("overrides, field", [
    ({"train.epohcs": 5}, "train.epohcs"),
    ({"eval.eps": [0.1, -0.1]}, "eval.eps"),
    ({"arms.pgd_at.technique": "pgd_att"}, "arms.pgd_at.technique"),
    ({"model.dropout": 1.0}, "model.dropout"),
    ({"data.dataset": "cifar100"}, "data.dataset"),
    ({"train.batch_size": "large"}, "train.batch_size"),
    ({"arms.fgsm_at.hparams.eps": -0.1}, "arms.fgsm_at"),
    ({"arms.fgsm_at.hparams.epsilon": 0.1}, "hparams.epsilon"),
    ({"data.scenario.ratio": 10}, "data.scenario.ratio"),
    ({"data.scenario": {"kind": "label_noise", "rate": 1.5}}, "data.scenario.rate"),
    ({"device": "tpu"}, "device"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as e:
        load_study("adversarial", "smoke", overrides)
    assert field in str(e.value) and "\n" not in str(e.value)


def test_unknown_study_and_profile():
    with pytest.raises(ConfigError, match="unknown study 'adverserial'"):
        load_study("adverserial")
    with pytest.raises(ConfigError, match="profile"):
        load_study("adversarial", "huge")


def test_overrides_parse_yaml_values():
    assert parse_overrides([("a.b", "3"), ("a.c", "[0.1, 0.2]"), ("d", "true")]) == {"a": {"b": 3, "c": [0.1, 0.2]}, "d": True}
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides([("a..b", "1")])


def test_cli_check_refuses_bad_params_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text("study: adversarial\ntrain:\n  epohcs: 3\n")
    assert "train.epohcs" in refused(capsys, "check", str(bad))
    neg = tmp_path / "neg.yaml"
    neg.write_text("study: adversarial\neval:\n  eps: [0.0, -0.05]\n")
    assert "eval.eps" in refused(capsys, "check", str(neg))
    unk = tmp_path / "unk.yaml"
    unk.write_text("study: adversarial\narms:\n  mine: {technique: magic_at}\n")
    assert "arms.mine.technique" in refused(capsys, "check", str(unk))
    broken = tmp_path / "broken.yaml"
    broken.write_text("study: adversarial\ntrain: [unclosed\n")
    assert "not valid YAML" in refused(capsys, "check", str(broken))
    assert "file not found" in refused(capsys, "check", str(tmp_path / "missing.yaml"))


def test_cli_check_accepts_the_shipped_params(capsys):
    assert cli.main(["check", "params/adversarial.yaml"]) == 0
    assert "ok: study adversarial" in capsys.readouterr().out


def test_cli_run_refuses_before_training(tmp_path):
    """Exit non-zero, one line, no traceback, and nothing written."""
    proc = subprocess.run([sys.executable, "-m", "studylib.cli", "run", "adversarial", "--outputs", str(tmp_path),
                           "-p", "eval.eps", "[-0.1]"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("studylib: error: eval.eps")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_cli_list_shows_techniques_with_defaults_and_ranges(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("erm", "fgsm_at", "pgd_at", "trades", "smoke", "digits", "label_noise"):
        assert name in out
    assert "beta: 6.0 (search log-[0.5, 12])" in out


def test_adversarial_arms_select_on_robust_validation_accuracy_unless_set():
    matrix = load_study("matrix", "quick")
    for arm in ("fgsm_at", "pgd_at", "trades"):
        assert matrix.run_config(arm, 0).train.select == "val_robust_acc", arm
    for arm in ("erm", "l2", "deq"):
        assert matrix.run_config(arm, 0).train.select == "val_acc", arm
    # an arm's own rule wins; so does a rule the study sets explicitly (synergy keeps the last epoch
    # of its plain AT arms on purpose: that is where robust overfitting shows)
    assert load_study("matrix", "quick", {"arms.pgd_at.train.select": "last"}).run_config("pgd_at", 0).train.select == "last"
    synergy = load_study("synergy", "quick")
    assert synergy.run_config("at", 0).train.select == "last"
    assert synergy.run_config("at_es", 0).train.select == "val_robust_acc"
    assert load_study("matrix", "quick", {"train.select": "val_acc"}).run_config("trades", 0).train.select == "val_acc"


def test_profiles_set_the_attacks_and_where_the_strong_ones_run():
    quick = load_study("adversarial", "quick").eval
    assert quick.attacks == ["fgsm", "pgd", "apgd", "apgd_t"] and quick.strong_eps_values() == {quick.main_eps}
    full = load_study("adversarial", "full").eval
    assert full.attacks == ["fgsm", "pgd", "autoattack"] and full.strong_eps_values() == set(full.eps_grid())
    assert load_study("adversarial", "quick", {"eval.strong_eps": [0.05, 0.1]}).eval.strong_eps_values() == {0.05, 0.1}
    with pytest.raises(ConfigError, match="strong_eps"):
        load_study("adversarial", "quick", {"eval.strong_eps": [0.07]})
    with pytest.raises(ConfigError, match="attacks"):
        load_study("adversarial", "quick", {"eval.attacks": ["fgsm", "art_autoattack"]})


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("study: adversarial\ntrain: {epochs: 3}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match="line 3 .*key 'train' is given twice"):
        check_params_file(dup)
