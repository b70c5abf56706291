"""Train zoo models on the generated task (CPU, seconds to a minute) and cache their weights.

Weights are cached as ``.npz`` (numpy, no pickle) under ``cache_dir()/trained`` keyed by the
family, width, resolution, prune ratio, data set, seed and the training schedule, so a grid
trains each model once. A pruned model starts from the trained unpruned weights, is pruned
(L1 filters) and fine-tuned for :data:`FINETUNE_EPOCHS` epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from registry.paths import cache_dir
from registry.zoo.dataset import TASKS, load_dataset
from registry.zoo.families import build_model
from registry.zoo.prune import prune_model

EPOCHS = 8
FINETUNE_EPOCHS = 2
BATCH = 64
LR = 3e-3
TRAIN_VERSION = 1
TRAIN_THREADS = int(os.environ.get("EDGEATLAS_TRAIN_THREADS", "1"))


def num_classes_for(family: str, dataset: str | None, task: str | None = None) -> int:
    """ImageNet's 1000 classes for an untrained torchvision config; the task's classes otherwise."""
    if dataset is None and family != "multitask":
        return 1000
    return len(TASKS[task or "shape"])


def task_names(family: str, task: str | None = None) -> list[str]:
    """The tasks a model is trained on: all three heads of the multi-task model; one task
    (default ``shape``) for a single-task family."""
    return list(TASKS) if family == "multitask" else [task or "shape"]


def _key(
    family: str, width: float, resolution: int, prune: float, dataset: str, seed: int, task: str | None = None
) -> str:
    payload: dict = {
        "family": family,
        "width": width,
        "resolution": resolution,
        "prune": prune,
        "dataset": dataset,
        "seed": seed,
        "epochs": EPOCHS,
        "finetune": FINETUNE_EPOCHS,
        "batch": BATCH,
        "lr": LR,
        "v": TRAIN_VERSION,
    }
    if task and task != "shape" and family != "multitask":
        payload["task"] = task
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _save(model: nn.Module, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **state)
    os.replace(tmp, path)


def _load(model: nn.Module, path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        model.load_state_dict(state)
        return True
    except (OSError, ValueError, RuntimeError, KeyError):
        return False


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Train on ``n`` intra-op threads. One thread: on a shared 2-core box, torch's two spinning
    threads ran 5-12x slower per step than one (measured 2.5 s vs 0.2 s per batch under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(
    model: nn.Module, family: str, dataset: str, resolution: int, epochs: int, seed: int, task: str | None = None
) -> None:
    with _threads(TRAIN_THREADS):
        _fit_inner(model, family, dataset, resolution, epochs, seed, task)


def _fit_inner(
    model: nn.Module, family: str, dataset: str, resolution: int, epochs: int, seed: int, task: str | None
) -> None:
    data = load_dataset(dataset, "train", resolution)
    tasks = task_names(family, task)
    x_all = torch.from_numpy(np.array(data.x))
    y_all = {t: torch.from_numpy(data.labels[t]) for t in tasks}
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = epochs * ((len(data) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), BATCH):
            idx = order[i : i + BATCH]
            if len(idx) < 2:
                continue
            out = model(x_all[idx])
            outs = out if isinstance(out, tuple) else (out,)
            loss = sum(loss_fn(o, y_all[t][idx]) for o, t in zip(outs, tasks, strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    _recalibrate_bn(model, x_all, gen)
    model.eval()


def _recalibrate_bn(model: nn.Module, x_all: torch.Tensor, gen: torch.Generator, batches: int = 16) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over training batches
    (torchvision's MobileNetV3/EfficientNet use momentum 0.01, too slow for a short schedule)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    order = torch.randperm(len(x_all), generator=gen)
    with torch.no_grad():
        for i in range(batches):
            idx = order[i * BATCH : (i + 1) * BATCH]
            if len(idx) > 1:
                model(x_all[idx])
    for bn in bns:
        bn.momentum = 0.1


def trained_model(
    family: str, width: float, resolution: int, prune: float, dataset: str, seed: int = 0, task: str | None = None
) -> nn.Module:
    """The model trained on ``dataset`` at ``resolution`` (cached), pruned + fine-tuned if ``prune``."""
    torch.manual_seed(seed)
    n_cls = num_classes_for(family, dataset, task)
    model = build_model(family, width, n_cls)
    path = cache_dir() / "trained" / f"{family}-{_key(family, width, resolution, 0.0, dataset, seed, task)}.npz"
    if not (path.exists() and _load(model, path)):
        torch.manual_seed(seed)
        model = build_model(family, width, n_cls)
        _fit(model, family, dataset, resolution, EPOCHS, seed, task)
        _save(model, path)
    model.eval()
    if prune:
        prune_model(model, prune)
        ppath = cache_dir() / "trained" / f"{family}-{_key(family, width, resolution, prune, dataset, seed, task)}.npz"
        if not (ppath.exists() and _load(model, ppath)):
            _fit(model, family, dataset, resolution, FINETUNE_EPOCHS, seed + 1, task)
            _save(model, ppath)
        model.eval()
    return model


def torch_accuracy(
    model: nn.Module, family: str, dataset: str, resolution: int, split: str = "test", task: str | None = None
) -> dict[str, float]:
    """Top-1 accuracy (percent) per task of a torch model (a sanity check; the zoo records the
    accuracy of the exported artifact, measured in its runtime)."""
    data = load_dataset(dataset, split, resolution)
    tasks = task_names(family, task)
    correct = {t: 0 for t in tasks}
    with torch.no_grad():
        for i in range(0, len(data), 256):
            out = model(torch.from_numpy(np.array(data.x[i : i + 256])))
            outs = out if isinstance(out, tuple) else (out,)
            for o, t in zip(outs, tasks, strict=True):
                correct[t] += int((o.argmax(1).numpy() == data.labels[t][i : i + 256]).sum())
    return {t: 100.0 * c / len(data) for t, c in correct.items()}
