"""Published numbers to show beside the kit's own (docs/gpu-full-profile.md lists them with their papers).

``note`` marks a figure recalled rather than read from its source ("from memory"): it is shown as
such. These are on the papers' datasets and models (CIFAR-10, MNIST,
Waterbirds, ...), not on the kit's embedded data: a guide to direction and size, not a target.
"""

from __future__ import annotations

import pandas as pd

ANCHORS = [
    # technique, setting, metric, baseline, method, source, note
    ("elr", "CIFAR-10 ResNet-34, symmetric noise 40%", "test accuracy %", 81.9, 89.15, "shengliu66/ELR README", "CE baseline from memory"),
    ("elr", "CIFAR-10 ResNet-34, symmetric noise 80%", "test accuracy %", 53.8, 73.86, "shengliu66/ELR README", "CE baseline from memory"),
    ("sat", "CIFAR-10 ResNet-34, symmetric noise 40%", "test accuracy %", 81.9, 92.64, "LayneH/self-adaptive-training README", "CE baseline from memory"),
    ("sat", "CIFAR-10 ResNet-34, symmetric noise 80%", "test accuracy %", 53.8, 78.58, "LayneH/self-adaptive-training README", "CE baseline from memory"),
    ("sat", "TRADES+SAT, CIFAR-10 WRN-34-10, ε=0.031", "PGD-20 accuracy %", 56.68, 58.03, "LayneH/self-adaptive-training README", ""),
    ("group_dro", "Waterbirds, ResNet-50", "worst-group accuracy %", 72.6, 91.4, "JTT paper / group_DRO", ""),
    ("group_dro", "CelebA, ResNet-50", "worst-group accuracy %", 47.2, 88.9, "JTT paper / group_DRO", ""),
    ("cw_erm", "LDAM-DRW, CIFAR-10-LT ratio 100, ResNet-32", "top-1 error %", 29.64, 22.97, "kaidic/LDAM-DRW", "both figures from memory"),
    ("pgd_at", "MNIST, ε=0.3", "accuracy % vs PGD-100 × 50 restarts", None, 89.62, "MadryLab/mnist_challenge", ""),
    ("pgd_at", "CIFAR-10, ε=8/255", "accuracy % vs PGD-20", None, 47.04, "MadryLab/cifar10_challenge", ""),
    ("fgsm_at", "CIFAR-10 PreActResNet-18, FGSM-RS", "clean / PGD accuracy %, minutes", None, "86.06 / 46.06 in 12 min",
     "locuslab/fast_adversarial", ""),
    ("pgd_at", "CIFAR-10 PreActResNet-18, PGD-AT", "clean / PGD accuracy %, minutes", None, "87.30 / 45.80 in 4966 min",
     "locuslab/fast_adversarial", ""),
    ("trades", "MNIST SmallCNN, ε=0.3", "clean / robust accuracy %", None, "99.48 / 96.07", "yaodongyu/TRADES", ""),
    ("deq", "MDEQ, CIFAR-10", "clean accuracy %", None, "≈93", "locuslab/deq", ""),
    ("erm", "airbench, CIFAR-10, one A100", "accuracy % in seconds", None, "94 in 2.59–3.29 s", "KellerJordan/cifar10-airbench", ""),
]


def anchors() -> pd.DataFrame:
    return pd.DataFrame(ANCHORS, columns=["technique", "setting", "metric", "baseline", "method", "source", "note"])
