"""Class-weighted ERM: each weighting rule against values computed by hand, the weighted loss, the
DRW switch, the adaptive update and its held-out slice of the training split (it never reads the
validation labels), hyperparameter validation; and the study's home finding end to end."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from studylib import Study, load_study, train
from studylib.data import Batch, Split, make_data
from studylib.techniques import RunContext, get_technique
from studylib.techniques.class_weighted import drw_switch_epoch, stratified_holdout

COUNTS = [100, 10, 1]


def make(counts=COUNTS, epochs=10, train=None, **hp):
    cls = get_technique("cw_erm")
    c = torch.tensor(counts)
    ctx = RunContext(n_train=int(c.sum()), num_classes=len(counts), n_groups=len(counts), epochs=epochs,
                     device=torch.device("cpu"), class_counts=c, group_counts=c, train=train)
    return cls(cls.hparams_model()(**hp), ctx)


def by_hand_normalised(raw):
    return [len(raw) * r / sum(raw) for r in raw]


def test_inverse_and_sqrt_inverse_weights_sum_to_the_number_of_classes():
    inv = by_hand_normalised([1 / 100, 1 / 10, 1 / 1])  # = 3·[1, 10, 100]/111
    assert inv == pytest.approx([3 / 111, 30 / 111, 300 / 111])
    assert make(weighting="inverse").weights.tolist() == pytest.approx(inv, rel=1e-6)
    sq = by_hand_normalised([1 / 10, 1 / math.sqrt(10), 1.0])
    assert make(weighting="sqrt_inverse").weights.tolist() == pytest.approx(sq, rel=1e-6)
    assert make(weighting="uniform").weights.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.9999])
def test_class_balanced_weights_are_the_inverse_effective_number(beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in COUNTS]  # Cui et al. 2019, eq. (1)-(2)
    w = make(weighting="class_balanced", beta=beta).weights
    assert w.tolist() == pytest.approx(by_hand_normalised(raw), rel=1e-5)
    assert float(w.sum()) == pytest.approx(3.0)


def test_class_balanced_interpolates_between_uniform_and_inverse():
    # β = 0.9: n = 100 and n = 10 are both "many" samples (E_n ≈ 10 and 6.5), far from inverse frequency
    w = make(weighting="class_balanced", beta=0.9).weights.tolist()
    assert w == pytest.approx(by_hand_normalised([0.1 / (1 - 0.9 ** 100), 0.1 / (1 - 0.9 ** 10), 1.0]), rel=1e-6)
    # β = 0.9999 with counts this small is within 1% of inverse frequency
    cb = make(weighting="class_balanced", beta=0.9999).weights
    assert cb.tolist() == pytest.approx(make(weighting="inverse").weights.tolist(), rel=0.01)


def test_weighted_loss_is_the_weight_normalised_mean():
    t = make(weighting="inverse")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.tensor([0, 0, 1, 2, 1])
    model = torch.nn.Linear(4, 3)
    ce = F.cross_entropy(model(x), y, reduction="none")
    w = torch.tensor([3 / 111, 30 / 111, 300 / 111])[y]
    assert torch.allclose(t.loss(model, Batch(x, y, torch.arange(5), y)), (w * ce).sum() / w.sum(), atol=1e-6)


def test_drw_switch_epoch_scales_with_the_budget():
    assert drw_switch_epoch(200, 0.8) == 161  # LDAM-DRW: epoch // 160 with 0-based epochs
    assert drw_switch_epoch(30, 0.8) == 25
    assert drw_switch_epoch(6, 0.8) == 6  # ⌊4.8 + ½⌋ = 5 uniform epochs
    assert drw_switch_epoch(10, 0.0) == 1  # re-weighted from the start
    assert drw_switch_epoch(3, 0.99) == 3  # at least one re-weighted epoch


def test_drw_is_uniform_before_the_switch_and_class_balanced_after():
    t = make(epochs=10, weighting="drw", drw_fraction=0.5)
    cb = make(weighting="class_balanced").weights
    for epoch in range(1, 11):
        t.epoch_start(epoch)
        expected = [1.0, 1.0, 1.0] if epoch <= 5 else cb.tolist()
        assert t.weights.tolist() == pytest.approx(expected), epoch
    assert t.diagnostics()["drw_switch_epoch"] == 6


class FixedPredictions(torch.nn.Module):
    """Predicts the class stored in the input's first feature."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.one_hot(x[:, 0].long(), 3).float() + 0 * self.p


def test_adaptive_weights_follow_the_running_error_of_each_class():
    # the signal split (holdout 0: the training examples themselves): class 0 all right (2/2),
    # class 1 half wrong (1/2), class 2 all wrong (1/1)
    y = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 0, 1])
    signal = Split(pred[:, None].float(), y, y, y)
    up, m = 11.0, 0.5
    t = make(train=signal, weighting="adaptive", upweight=up, momentum=m, signal="error", holdout=0.0)
    assert t.train_index() is None  # holdout 0: every example trains
    assert t.weights.tolist() == [1.0, 1.0, 1.0]  # uniform before any signal
    row = t.epoch_end(FixedPredictions(), 1)
    err = [0.5 * 0.0, 0.5 * 0.5, 0.5 * 1.0]  # ē = m·0 + (1 − m)·e
    expected = by_hand_normalised([1 + (up - 1) * e for e in err])  # 1, 3.5, 6 → ×3/10.5
    assert expected == pytest.approx([3 / 10.5, 10.5 / 10.5, 18 / 10.5])
    assert t.weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert [row[f"w_{c}"] for c in range(3)] == pytest.approx(expected, rel=1e-6)
    t.epoch_end(FixedPredictions(), 2)  # the same errors again: ē = 0.75·e
    assert t.weights.tolist() == pytest.approx(by_hand_normalised([1.0, 1 + 10 * 0.375, 1 + 10 * 0.75]), rel=1e-6)
    assert t.diagnostics()["class_error"] == pytest.approx([0.0, 0.375, 0.75])


def test_adaptive_keeps_the_running_error_of_classes_absent_from_the_signal():
    y = torch.tensor([0, 1])  # class 2 absent
    signal = Split(torch.tensor([[1.0], [1.0]]), y, y, y)  # class 0 wrong, class 1 right
    t = make(train=signal, weighting="adaptive", upweight=5.0, momentum=0.0, signal="error", holdout=0.0)
    t.class_error = torch.tensor([0.0, 0.0, 0.4])
    t.epoch_end(FixedPredictions(), 1)
    assert t.class_error.tolist() == pytest.approx([1.0, 0.0, 0.4])
    assert t.weights.tolist() == pytest.approx(by_hand_normalised([5.0, 1.0, 1 + 4 * 0.4]), rel=1e-6)


class FixedProbabilities(torch.nn.Module):
    """Returns the log of the probabilities stored in the input (softmax gives them back)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x.log() + 0 * self.p


def test_adaptive_soft_error_is_one_minus_the_mean_true_class_probability():
    y = torch.tensor([0, 0, 1, 2])
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.3, 0.6]])
    signal = Split(probs, y, y, y)
    t = make(train=signal, weighting="adaptive", upweight=3.0, momentum=0.0, holdout=0.0)  # soft_error: default
    t.epoch_end(FixedProbabilities(), 1)
    soft = [1 - (0.9 + 0.7) / 2, 1 - 0.5, 1 - 0.6]  # 0.2, 0.5, 0.4 — every prediction is right
    assert t.class_error.tolist() == pytest.approx(soft, rel=1e-5)
    assert t.weights.tolist() == pytest.approx(by_hand_normalised([1 + 2 * e for e in soft]), rel=1e-5)


def test_stratified_holdout_takes_a_share_of_every_class_and_leaves_each_one_a_training_example():
    y = torch.tensor([0] * 100 + [1] * 10 + [2] * 3 + [3] * 2 + [4])
    kept, held = stratified_holdout(y, 6, 0.2, seed=0)
    assert torch.bincount(y[held], minlength=6).tolist() == [20, 2, 1, 1, 0, 0]  # ⌊0.2·n + ½⌋, ≥ 1 if n ≥ 2
    assert torch.bincount(y[kept], minlength=6).tolist() == [80, 8, 2, 1, 1, 0]  # every class keeps ≥ 1
    assert torch.equal(torch.cat([kept, held]).sort().values, torch.arange(len(y)))
    again, other = stratified_holdout(y, 6, 0.2, seed=0), stratified_holdout(y, 6, 0.2, seed=1)
    assert torch.equal(held, again[1]) and not torch.equal(held, other[1])


def test_adaptive_trains_without_its_held_out_slice_and_measures_the_error_there():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    split = Split(y[:, None].float(), y, y, y)
    t = make(counts=[10, 5, 2], train=split, weighting="adaptive", holdout=0.2)
    held = torch.tensor(sorted(set(range(len(y))) - set(t.train_index().tolist())))
    assert torch.bincount(y[held], minlength=3).tolist() == [2, 1, 1]
    assert torch.equal(t.signal.y, y[held]) and t.diagnostics()["signal_examples_per_class"] == [2, 1, 1]
    assert make(counts=[10, 5, 2], train=split, weighting="class_balanced").train_index() is None


def _adaptive_run(data, monkeypatch=None, guard=None, refit=False):
    cfg = load_study("cw_erm", "smoke", overrides={"train.epochs": 4, "arms.adaptive.hparams.refit": refit}
                     ).run_config("adaptive", 0)
    if guard is not None:
        def guarded_validate(model, data, cfg):  # the loop's own validation may read the labels
            guard.open = True
            try:
                return validate(model, data, cfg)
            finally:
                guard.open = False
        validate = train.validate
        monkeypatch.setattr(train, "validate", guarded_validate)
    return train.fit(cfg, data, progress=False)


class GuardedLabels:
    """A validation split whose labels (y, y_true, group) raise unless ``open``."""

    def __init__(self, split):
        self._split, self.open = split, False

    def __len__(self):
        return len(self._split)

    def __getattr__(self, name):
        if name in ("y", "y_true", "group") and not self.open:
            raise AssertionError(f"validation {name} read during training")
        return getattr(self._split, name)


def test_adaptive_never_reads_the_validation_labels(monkeypatch):
    """The adaptive weights come from the held-out slice of the training split: garbage validation
    labels leave the weights and the trained model exactly as they are, and a validation split whose
    labels raise outside the loop's own validation trains to the end."""
    data = make_data(load_study("cw_erm", "smoke").data, 0)
    real = _adaptive_run(data)
    g = torch.Generator().manual_seed(1)
    garbage = torch.randint(0, data.num_classes, (len(data.val),), generator=g)
    noisy_val = dataclasses.replace(data.val, y=garbage, y_true=garbage, group=garbage)
    other = _adaptive_run(dataclasses.replace(data, val=noisy_val))
    assert [r["val_acc"] for r in real.history] != [r["val_acc"] for r in other.history]  # the labels did change
    weights = [[r[f"w_{c}"] for c in range(10)] for r in real.history]
    assert weights == [[r[f"w_{c}"] for c in range(10)] for r in other.history]
    assert max(max(w) - min(w) for w in weights) > 0.2  # the weights did move
    for a, b in zip(real.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    guard = GuardedLabels(data.val)
    guarded = _adaptive_run(dataclasses.replace(data, val=guard), monkeypatch, guard)
    assert [[r[f"w_{c}"] for c in range(10)] for r in guarded.history] == weights
    assert real.trained_examples == len(data.train) - sum(real.diagnostics["signal_examples_per_class"])


def test_adaptive_takes_no_gradient_step_on_its_held_out_slice(monkeypatch):
    seen = []
    batches = train.batches

    def recording(*args, **kwargs):
        for b in batches(*args, **kwargs):
            seen.append(b.idx)
            yield b

    monkeypatch.setattr(train, "batches", recording)
    data = make_data(load_study("cw_erm", "smoke").data, 0)
    result = _adaptive_run(data)
    kept = result.technique.train_index()
    idx = torch.cat(seen)
    assert bool(torch.isin(idx, kept).all()) and len(idx.unique()) == len(kept)


def test_adaptive_refits_on_the_same_examples_as_its_erm_twin(monkeypatch, tick_clock):
    """The adaptive rule learns its weights on a first fit that holds a slice out, then refits from
    scratch on the whole training split with those weights fixed: its model takes gradient steps on
    exactly the examples its ERM twin does, and the weights are the first fit's final ones."""
    indices = []  # the example index the loop hands the batcher, one per epoch
    batches = train.batches

    def recording(split, *args, index=None, **kwargs):
        indices.append(index)
        yield from batches(split, *args, index=index, **kwargs)

    monkeypatch.setattr(train, "batches", recording)
    # tick_clock: each epoch's training time is exactly 1 s, nothing is measured
    data = make_data(load_study("cw_erm", "smoke").data, 0)
    first = _adaptive_run(data)
    indices.clear()
    refit = _adaptive_run(data, refit=True)
    # 4 epochs of the first fit on the kept slice, then 4 of the refit on the whole split (no index, as ERM)
    assert [i is None for i in indices] == [False] * 4 + [True] * 4
    assert torch.equal(indices[0], first.technique.train_index())
    study = load_study("cw_erm", "smoke", overrides={"train.epochs": 4})
    erm = train.fit(study.run_config("erm", 0), data, progress=False)
    assert erm.trained_examples is None and refit.trained_examples is None  # the whole training split
    assert first.trained_examples == len(data.train) - sum(first.diagnostics["signal_examples_per_class"])
    # the refit's first fit is the refit=False run: same slice, same learned weights
    assert refit.diagnostics["first_fit"]["trained_examples"] == first.trained_examples
    assert refit.diagnostics["weights"] == first.diagnostics["weights"]
    assert max(refit.diagnostics["weights"]) - min(refit.diagnostics["weights"]) > 0.2  # learned, not uniform
    assert all(r["w_0"] == refit.history[0]["w_0"] for r in refit.history)  # fixed during the refit
    assert [r["w_0"] for r in refit.diagnostics["first_fit"]["history"]] == [r["w_0"] for r in first.history]
    assert len(refit.history) == len(erm.history) == 4
    # the refit's cost counts both fits: 4 epochs of the first fit, then its own 4
    assert refit.diagnostics["first_fit"]["train_seconds"] == first.train_seconds == 4.0
    assert refit.train_seconds == 8.0
    cfg = study.run_config("adaptive", 0)
    assert get_technique("cw_erm").first_fit(cfg).hparams["refit"] is False
    assert get_technique("cw_erm").first_fit(study.run_config("class_balanced", 0)) is None


def test_hyperparameters_are_validated():
    model = get_technique("cw_erm").hparams_model()
    assert model().weighting == "class_balanced" and model().beta == 0.9999
    with pytest.raises(Exception, match="weighting"):
        model(weighting="focal")
    with pytest.raises(Exception, match="beta"):
        model(beta=1.0)  # β = 1 divides by zero
    with pytest.raises(Exception, match="upweight"):
        model(upweight=0.5)  # λ_up < 1 would downweight the errors
    with pytest.raises(Exception, match="momentum"):
        model(momentum=1.0)  # m = 1 never updates
    with pytest.raises(Exception, match="drw_fraction"):
        model(drw_fraction=1.0)
    with pytest.raises(Exception, match="wieghting"):
        model(wieghting="inverse")


def test_class_weighting_beats_erm_on_balanced_accuracy():
    """Cui et al. 2019 / Cao et al. 2019: re-weighting by class raises balanced accuracy on a
    long-tailed training set (ratio 50: 105 → 2 images per class; balanced test). The effect is small
    and consistent: on seeds 0–4 every rule gained +0.005 to +0.038, the mean of inverse,
    class-balanced and DRW at least +0.012 per seed."""
    results = Study(load_study("cw_erm", "smoke"), progress=False).run()
    bal = results.summary().balanced_acc
    rules = ["inverse", "class_balanced", "drw"]
    assert (bal[rules] > bal["erm"]).all(), bal
    assert bal[rules].mean() > bal["erm"] + 0.01, bal
    assert bal["class_balanced_l2"] > bal["erm_l2"] + 0.02, bal
    assert not results.failed, results.failed
