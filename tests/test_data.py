"""Datasets, splits, scenarios and corruptions."""

import numpy as np
import pytest
import torch

from studylib import corruptions
from studylib.config import DataConfig, Imbalance, LabelNoise, SmallData, Spurious
from studylib.data import batches, load_raw, make_data
from studylib.scenarios import ASYMMETRIC_PAIRS, imbalance_counts


@pytest.mark.parametrize("name, shape, n", [("digits", (1, 8, 8), 1797), ("mnist1d", (1, 40), 5000)])
def test_embedded_datasets_in_unit_range(name, shape, n):
    x, y = load_raw(name)
    assert x.shape == (n, *shape) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert set(np.unique(y)) == set(range(10))


def test_splits_disjoint_stratified_and_fixed_by_seed():
    d = make_data(DataConfig(), seed=3)
    sizes = len(d.train), len(d.val), len(d.test)
    assert sum(sizes) == 1797 and sizes[2] == 450
    rows = {tuple(v) for s in (d.train, d.val, d.test) for v in s.x.flatten(1).numpy().round(4)}
    assert len(rows) >= 1797 - 20  # disjoint up to the handful of duplicate images in digits
    totals = np.bincount(load_raw("digits")[1])
    share = torch.bincount(d.test.y).numpy() / totals
    assert np.abs(share - 0.25).max() < 1.5 / totals.min()  # stratified: 25% of each class ± 1
    again, other = make_data(DataConfig(), seed=3), make_data(DataConfig(), seed=4)
    assert torch.equal(d.train.x, again.train.x) and not torch.equal(d.train.x, other.train.x)


def test_small_data_keeps_a_stratified_fraction():
    full, small = make_data(DataConfig(), 0), make_data(DataConfig(scenario=SmallData(fraction=0.1)), 0)
    assert abs(len(small.train) - 0.1 * len(full.train)) <= 10
    assert torch.bincount(small.train.y).min() >= 9 and len(small.test) == len(full.test)


def test_symmetric_noise_definition_over_all_classes():
    d = make_data(DataConfig(scenario=LabelNoise(rate=0.4)), 0)
    flipped = d.train.noisy.float().mean().item()
    assert abs(flipped - 0.4 * 9 / 10) < 0.04  # drawn over all classes: 36% actually wrong
    assert d.val.noisy.any() and not d.test.noisy.any()
    excl = make_data(DataConfig(scenario=LabelNoise(rate=0.4, exclude_true=True)), 0)
    assert abs(excl.train.noisy.float().mean().item() - 0.4) < 0.04
    assert d.info["train_noise_fraction"] == pytest.approx(flipped, abs=1e-6)


def test_asymmetric_noise_flips_only_class_pairs():
    d = make_data(DataConfig(scenario=LabelNoise(rate=0.4, noise="asymmetric")), 0)
    noisy = d.train.noisy
    pairs = set(zip(d.train.y_true[noisy].tolist(), d.train.y[noisy].tolist()))
    assert pairs <= set(ASYMMETRIC_PAIRS.items()) and len(pairs) == len(ASYMMETRIC_PAIRS)
    for src in ASYMMETRIC_PAIRS:
        frac = noisy[d.train.y_true == src].float().mean().item()
        assert 0.25 < frac < 0.55


def test_imbalance_long_tail_and_balanced_test():
    assert imbalance_counts(np.array([100] * 10), 10).tolist()[0] == 100
    assert imbalance_counts(np.array([100] * 10), 10).tolist()[-1] == 10
    d = make_data(DataConfig(scenario=Imbalance(ratio=20)), 0)
    c = torch.bincount(d.train.y, minlength=10)
    assert c[0] / c[-1] == pytest.approx(20, rel=0.15) and (c[:-1] >= c[1:]).all()
    t = torch.bincount(d.test.y)
    assert t.max() - t.min() <= 3  # the test split is untouched: as balanced as digits itself


def test_spurious_border_aligned_in_training_independent_at_test():
    d = make_data(DataConfig(scenario=Spurious(correlation=0.95)), 0)
    assert d.num_classes == 2 and d.n_groups == 4
    for split, expected in ((d.train, 0.95), (d.test, 0.5)):
        attr = split.group % 2
        border = split.x[:, 0, 0, :].mean(1) == 1.0
        assert torch.equal(attr.bool(), border)  # the attribute is exactly the border
        agree = (attr == split.y).float().mean().item()
        assert abs(agree - expected) < 0.06
    assert torch.bincount(d.test.group, minlength=4).min() > 60


@pytest.mark.parametrize("ratio", [10, 20, 50])
@pytest.mark.parametrize("seed", [0, 1000])
def test_imbalance_validation_is_class_balanced_and_large_enough_to_select_on(ratio, seed):
    """The training split keeps the long tail; the validation split has the same number of images
    of every class: 26 on digits at the default 15% (one image moves a class's recall by 0.04)."""
    d = make_data(DataConfig(scenario=Imbalance(ratio=ratio)), seed)
    train, val = torch.bincount(d.train.y, minlength=10), torch.bincount(d.val.y, minlength=10)
    assert train[0] / train[-1] == pytest.approx(ratio, rel=0.2)
    assert (val == val[0]).all() and val[0] >= 25, val.tolist()
    assert torch.equal(d.val.group, d.val.y)  # the groups a technique or the loop reads: the classes


@pytest.mark.parametrize("val_fraction, smallest", [(0.15, 60), (0.25, 100)])  # the matrix's, the DRO study's
@pytest.mark.parametrize("seed", [0, 1000])
def test_spurious_validation_is_group_balanced_with_the_border_independent_of_the_label(val_fraction, smallest, seed):
    d = make_data(DataConfig(scenario=Spurious(correlation=0.95), val_fraction=val_fraction), seed)
    groups = torch.bincount(d.val.group, minlength=4)
    assert groups.min() >= smallest and groups.max() - groups.min() <= 1, groups.tolist()
    attr = d.val.group % 2
    assert torch.equal(attr.bool(), d.val.x[:, 0, 0, :].mean(1) == 1.0)  # the attribute is the border
    train = torch.bincount(d.train.group, minlength=4)
    assert train[1] + train[2] < 0.1 * len(d.train)  # the training split keeps the correlation


def test_the_validation_split_changes_nothing_in_the_training_and_test_splits():
    """The balanced validation splits are drawn with the random numbers the correlated / long-tailed
    ones used, so the training and test splits are those of earlier versions (numbers measured with
    the correlated / long-tailed validation splits, seed 0)."""
    for scenario, n_train, pixels, test_groups in ((Spurious(correlation=0.95), 1077, 33713, 675),
                                                   (Imbalance(ratio=50), 290, 5680, 2016)):
        d = make_data(DataConfig(scenario=scenario), 0)
        assert (len(d.train), int(d.train.x.sum()), int(d.test.group.sum())) == (n_train, pixels, test_groups)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("kind", list(corruptions.SEVERITY))
def test_corruptions_stay_in_range_grow_with_severity_and_repeat(dataset, kind):
    d = make_data(DataConfig(dataset=dataset, n_train=200), 0)
    if kind not in corruptions.available(d.input_shape):
        with pytest.raises(ValueError):
            corruptions.corrupt(d.test.x[:4], kind, 1)
        return
    x = d.test.x[:64]
    dist = []
    for s in (1, 3, 5):
        xc = corruptions.corrupt(x, kind, s, seed=1)
        assert xc.shape == x.shape and xc.min() >= 0 and xc.max() <= 1
        assert torch.equal(xc, corruptions.corrupt(x, kind, s, seed=1))
        dist.append((xc - x).abs().mean().item())
    assert dist[0] > 0 and dist[0] < dist[1] < dist[2]


def test_batches_carry_index_and_group_and_cover_the_split():
    d = make_data(DataConfig(scenario=Spurious()), 0)
    seen = []
    for b in batches(d.train, 64, torch.Generator().manual_seed(0)):
        assert torch.equal(b.x, d.train.x[b.idx]) and torch.equal(b.group, d.train.group[b.idx])
        seen.append(b.idx)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(d.train)))


def test_under_label_noise_groups_are_the_given_labels():
    """The groups a technique trains on come from what the learner is given: the noisy label on the
    training and validation splits, never the clean class; the test split keeps the true class."""
    for scenario in (LabelNoise(rate=0.4), LabelNoise(rate=0.4, noise="asymmetric")):
        d = make_data(DataConfig(scenario=scenario), 0)
        for split in (d.train, d.val):
            assert torch.equal(split.group, split.y)
            assert not torch.equal(split.group, split.y_true)  # ≈36% / ≈15% of them differ
        assert torch.equal(d.test.group, d.test.y_true) and torch.equal(d.test.y, d.test.y_true)
    clean = make_data(DataConfig(), 0)
    assert torch.equal(clean.train.group, clean.train.y)


def _shares(split, key, sampler, seed=0, epochs=20):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.cat([getattr(b, key) for _ in range(epochs) for b in batches(split, 64, gen, sampler=sampler)])
    return torch.bincount(keys).float() / len(keys)


def test_group_balanced_sampler_draws_every_group_equally_often():
    """Group DRO's --reweight_groups: with replacement, weight 1/n_g per example, so each of the 4
    groups of the spurious training split is a quarter of the draws, where a plain shuffled pass
    gives each minority group its 2–3% (≈20 of ≈900 images)."""
    d = make_data(DataConfig(scenario=Spurious(correlation=0.95)), 0)
    counts = torch.bincount(d.train.group, minlength=4)
    assert counts[[1, 2]].max() < 0.035 * len(d.train)
    uniform = _shares(d.train, "group", "uniform")
    assert uniform[[1, 2]].max() < 0.035 and uniform[[0, 3]].min() > 0.45
    balanced = _shares(d.train, "group", "group_balanced")  # 20 epochs ≈ 18 000 draws
    assert torch.allclose(balanced, torch.full((4,), 0.25), atol=0.02), balanced
    # the same number of batches (of the same sizes) per epoch as a plain pass
    sizes = [len(b.y) for b in batches(d.train, 64, torch.Generator().manual_seed(0), sampler="group_balanced")]
    assert sizes == [len(b.y) for b in batches(d.train, 64, torch.Generator().manual_seed(0))]
    # drawn with replacement: a minority image comes back several times within an epoch
    idx = torch.cat([b.idx for b in batches(d.train, 64, torch.Generator().manual_seed(0), sampler="group_balanced")])
    assert len(idx.unique()) < len(idx)
    for b in batches(d.train, 64, torch.Generator().manual_seed(0), sampler="group_balanced"):
        assert torch.equal(b.x, d.train.x[b.idx]) and torch.equal(b.group, d.train.group[b.idx])


def test_class_balanced_sampler_balances_the_given_labels():
    d = make_data(DataConfig(scenario=Imbalance(ratio=20)), 0)
    assert torch.allclose(_shares(d.train, "y", "class_balanced", epochs=60), torch.full((10,), 0.1), atol=0.02)


def test_balanced_samplers_are_deterministic_given_the_seed():
    d = make_data(DataConfig(scenario=Spurious()), 0)

    def order(seed, sampler):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b.idx for _ in range(2) for b in batches(d.train, 64, gen, sampler=sampler)])

    for sampler in ("group_balanced", "class_balanced"):
        assert torch.equal(order(3, sampler), order(3, sampler))
        assert not torch.equal(order(3, sampler), order(4, sampler))


def test_batches_draw_only_from_the_index_given():
    d = make_data(DataConfig(scenario=Spurious()), 0)
    index = torch.arange(0, len(d.train), 3)
    for sampler in ("uniform", "group_balanced"):
        idx = torch.cat([b.idx for b in batches(d.train, 64, torch.Generator().manual_seed(0), sampler=sampler,
                                                index=index)])
        assert len(idx) == len(index) and bool(torch.isin(idx, index).all())
    plain = torch.cat([b.idx for b in batches(d.train, 64, torch.Generator().manual_seed(0), index=index)])
    assert torch.equal(plain.sort().values, index)  # uniform: one pass over the index
    with pytest.raises(ValueError, match="sampler"):
        next(batches(d.train, 64, sampler="balanced"))
