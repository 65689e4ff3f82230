"""Plain metrics on logits and labels (no model calls): accuracy, balanced accuracy, per-class
recall, group accuracies and expected calibration error."""

from __future__ import annotations

from ._lazy import lazy_import

# imported on first use: the techniques import this module, and `studylib list` needs no torch
torch = lazy_import("torch")


def accuracy_metrics(logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor,
                     num_classes: int, n_groups: int) -> dict:
    """Accuracy; per-class recall and its mean (balanced accuracy, over classes present);
    per-group accuracy, its minimum (worst-group) and its unweighted mean over groups present
    (the *average group accuracy*; the test-size-weighted average is plain accuracy)."""
    correct = (logits.argmax(1) == y).float()
    recall = _per_index_mean(correct, y, num_classes)
    group_acc = _per_index_mean(correct, group, n_groups)
    present_r = [r for r in recall if r is not None]
    present_g = [g for g in group_acc if g is not None]
    return {"acc": correct.mean().item(),
            "balanced_acc": sum(present_r) / len(present_r),
            "per_class_recall": recall,
            "group_acc": group_acc,
            "worst_group_acc": min(present_g),
            "avg_group_acc": sum(present_g) / len(present_g)}


def _per_index_mean(values: torch.Tensor, index: torch.Tensor, n: int) -> list:
    sums = torch.zeros(n, device=values.device).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=n).float()
    return [(s / c).item() if c > 0 else None for s, c in zip(sums, counts)]


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): Σ_b (n_b/n)·|acc_b − conf_b| over ``bins`` equal-width confidence
    bins (right-closed, as in the usual implementation)."""
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    ece = torch.zeros((), device=probs.device)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return ece.item()
