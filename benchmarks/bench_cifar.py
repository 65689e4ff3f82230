"""The GPU path's speed on CIFAR-10-shaped data (prints ratios; nothing is asserted).

1. studylib's ERM throughput ÷ a plain hand-written loop doing the same work: the same model in
   bf16 autocast and channels_last, GPU-resident data, per-example random crop (padding 4) and
   horizontal flip on the GPU, SGD with Nesterov momentum (target ≥ 0.95 on a GPU);
2. fast AT (FGSM-RS) and PGD-k AT epoch cost as multiples of studylib's ERM epoch.

The data is CIFAR-10 from the data root when it is there (``studylib data download cifar10``),
else random tensors of the same shape: throughput does not depend on the pixel values. Epoch
times are medians after a warm-up epoch; the two loops alternate in rounds so that drift (clocks,
thermals) hits both alike. Defaults follow the device: on a GPU, PreActResNet-18, 50 000 examples,
batch 512, bf16, channels_last; on a CPU, a narrow ResNet-9 on 1 024 examples in fp32 so that it
ends in a few minutes. Usage:

    python benchmarks/bench_cifar.py [--arch preact_resnet18] [--n 50000] [--batch 512]
        [--epochs 3] [--rounds 2] [--steps 10] [--precision bf16] [--compile] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import studylib
from studylib import datasets
from studylib.config import load_study
from studylib.data import Data, Split
from studylib.models import build_model
from studylib.train import fit, resolve_device, seed_everything


def cifar_like(n: int, n_val: int, device) -> tuple[Data, str]:
    """CIFAR-10 from the data root if present, else random tensors of its shape, on ``device``."""
    try:
        xtr, ytr, _, _ = datasets.load("cifar10")
        x = torch.as_tensor(xtr[:n + n_val]).float().div_(255)
        y = torch.as_tensor(ytr[:n + n_val])
        source = f"CIFAR-10 from {datasets.data_root()}"
    except datasets.DataError:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n + n_val, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n + n_val,), generator=g)
        source = "random tensors of CIFAR-10's shape (no CIFAR-10 under the data root)"

    def split(a, b):
        return Split(x[a:b], y[a:b], y[a:b], y[a:b])

    data = Data(train=split(0, n), val=split(n, n + n_val), test=split(n, n + n_val), num_classes=10,
                n_groups=10, group_names=[f"class {c}" for c in range(10)], input_shape=(3, 32, 32),
                mean=float(x[:n].mean()), std=float(x[:n].std()))
    return data.to(device), source


def hand_loop_epoch_seconds(cfg, data, epochs: int) -> list[float]:
    """The reference a performance-minded researcher would write: no hooks, no history."""
    device = data.train.x.device
    seed_everything(cfg.seed, cfg.deterministic, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes, data.mean, data.std).to(device)
    bf16 = cfg.train.precision == "bf16"
    channels_last = cfg.train.channels_last and device.type == "cuda"  # studylib's policy: CUDA only
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = torch.compile(model) if cfg.train.compile else model
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                          weight_decay=t.weight_decay)
    x_all, y_all, bs, p = data.train.x, data.train.y, t.batch_size, 4
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    padded = F.pad(x_all, (p, p, p, p))
    ar = torch.arange(32, device=device)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(y_all), device=device)
        for i in range(0, len(y_all), bs):
            idx = perm[i:i + bs]
            dy, dx = torch.randint(0, 2 * p + 1, (2, len(idx)), device=device)
            rows = (dy[:, None] + ar)[:, None, :, None]
            cols = (dx[:, None] + ar)[:, None, None, :]
            xb = padded[idx[:, None, None, None], torch.arange(3, device=device)[None, :, None, None], rows, cols]
            flip = torch.rand(len(idx), device=device) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(step(xb), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def studylib_epoch_seconds(cfg, data) -> list[float]:
    result = fit(cfg, data, progress=False)
    cumulative = [row["seconds"] for row in result.history]
    return [b - a for a, b in zip([0.0] + cumulative, cumulative)][1:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default=None, help="preact_resnet18 (GPU default) or resnet9 (CPU default)")
    ap.add_argument("--width", type=int, default=None, help="base width (64 on GPU, 16 on CPU)")
    ap.add_argument("--n", type=int, default=None, help="training examples (50 000 on GPU, 1 024 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (512 on GPU, 128 on CPU)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per loop and round, after a warm-up (3 on GPU, 2 on CPU)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="k of PGD-k AT")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="bf16 on GPU, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    arch = args.arch or ("preact_resnet18" if gpu else "resnet9")
    n = args.n or (50_000 if gpu else 1_024)
    batch = args.batch or (512 if gpu else 128)
    precision = args.precision or ("bf16" if gpu else "fp32")
    width = args.width or (64 if gpu else 16)
    args.epochs = args.epochs or (3 if gpu else 2)
    over = {"device": args.device, "deterministic": False, "seeds": [0],
            "model": {"arch": arch, "base_width": width, "dropout": 0.0, "batchnorm": True},
            "train": {"epochs": args.epochs + 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.05,
                      "nesterov": True, "weight_decay": 5e-4, "schedule": "constant", "select": "last",
                      "precision": precision, "channels_last": True, "compile": args.compile,
                      "max_steps": None, "patience": None},
            "data": {"augment": "crop_flip", "crop_padding": 4},
            "arms.pgd_at.hparams.steps": args.steps}
    base = load_study("adversarial", "full", over)
    runs = {arm: base.run_config(arm, 0) for arm in ("erm", "fgsm_at", "pgd_at")}
    data, source = cifar_like(n, 512, device)

    hand, lib, fast, pgd = [], [], [], []
    for r in range(args.rounds):
        first, second = ((lambda: lib.extend(studylib_epoch_seconds(runs["erm"], data))),
                         (lambda: hand.extend(hand_loop_epoch_seconds(runs["erm"], data, args.epochs))))
        for job in ((first, second) if r % 2 else (second, first)):
            job()
        fast += studylib_epoch_seconds(runs["fgsm_at"], data)
        pgd += studylib_epoch_seconds(runs["pgd_at"], data)
    med = {k: statistics.median(v) for k, v in (("hand", hand), ("erm", lib), ("fast", fast), ("pgd", pgd))}
    k = args.steps
    name = torch.cuda.get_device_name(device) if gpu else (platform.processor() or platform.machine())
    print(f"studylib {studylib.__version__}, torch {torch.__version__}, device {device} ({name}), "
          f"threads {torch.get_num_threads()}")
    print(f"data: {source}; {n} training examples, batch {batch}, {arch} (width {width}), {precision}, "
          f"{'channels_last, ' if gpu else ''}on-device crop+flip{', torch.compile' if args.compile else ''}; "
          f"median of {len(hand)} epochs per loop")
    print(f"hand-written loop: {med['hand']:.3f} s/epoch ({n / med['hand']:.0f} examples/s)")
    print(f"studylib ERM:      {med['erm']:.3f} s/epoch ({n / med['erm']:.0f} examples/s)")
    print(f"ERM throughput ratio (studylib / hand loop): {med['hand'] / med['erm']:.3f}   (target >= 0.95 on GPU)")
    print(f"fast AT (FGSM-RS) cost: {med['fast'] / med['erm']:.2f}x ERM")
    print(f"PGD-{k} AT cost: {med['pgd'] / med['erm']:.2f}x ERM = {med['pgd'] / med['erm'] / (k + 1):.2f} of k+1={k + 1}")


if __name__ == "__main__":
    main()
