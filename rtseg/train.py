"""``rtseg train``: fit a model preset on a dataset, resumably, and keep the best weights.

Everything that shapes the result lives in the training YAML (``configs/train/*.yaml``), so the
shipped weights can be reproduced with ``rtseg train --config <that file>``. A run writes into
``<out>/<name>/``: ``last.pt`` (resumable state, plain tensors), ``best.safetensors`` (EMA weights
of the best validation mIoU, self-describing) and ``history.json`` (one record per epoch).
Re-running the same command resumes from ``last.pt``; randomness is re-seeded from
``(seed, epoch)`` at the start of each epoch, so a resumed run draws the same batches.

:func:`fit` reads top to bottom as torchvision's reference trainer does: build the data, model,
loss and optimizer, resume, then per epoch :func:`train_one_epoch`, :func:`evaluate_sets` on the
scoring sets, keep the best weights and save ``last.pt``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from rtseg.backends.base import ModelMeta
from rtseg.backends.torch_backend import TorchBackend
from rtseg.checkpoint import load_state, save_state, save_weights
from rtseg.config import DatasetConfig, ModelPreset, from_dict, load_dataset_config, load_preset, load_yaml
from rtseg.data import labelled_dataset, split_parts, train_transform
from rtseg.ema import ModelEMA
from rtseg.errors import RtsegError
from rtseg.evaluate import evaluate
from rtseg.data.stats import class_weights, count_pixels
from rtseg.losses import DeepSupervisionLoss, build_loss
from rtseg.progress import Progress, log_stderr
from rtseg.zoo import build_from_preset


@dataclass
class TrainConfig:
    """One training run. Paths are relative to the working directory."""

    name: str                                   # run folder name under `out`
    preset: str                                 # configs/models/<preset>.yaml
    root: str = "../shared/data/camvid"         # dataset root
    data: str | None = None                     # loader (camvid | cityscapes | folder); default: the preset's dataset
    train_split: str = "train"                  # a split, or several joined by '+' (train+val)
    val_split: str = "val"                      # always scored and reported
    holdout: str | None = None                  # a drive left out of training; checkpoints are picked on it
    holdout_split: str = "train"                # where the held-out drive's labelled frames are
    crop_size: list[int] = field(default_factory=lambda: [360, 480])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    jitter: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.3, 0.0])
    appearance: dict = field(default_factory=dict)  # camera effects: gamma, blur, noise, jpeg (rtseg.data.transforms)
    focus_classes: list[str] = field(default_factory=list)  # class names crops are centred on (rare ones)
    focus_p: float = 0.0                        # share of crops centred on a focus class, when one is present
    epochs: int = 100
    batch_size: int = 8
    optimizer: str = "sgd"                      # sgd | adamw
    lr: float = 0.01
    head_lr_mult: float = 1.0                   # lr multiplier of everything but the backbone
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    poly_power: float = 0.9
    loss: Any = "ce"                            # a name of rtseg.losses.LOSSES or a list of terms
    loss_options: dict = field(default_factory=dict)
    class_weights: str | None = None            # None | median_freq | enet
    aux_weights: list[float] = field(default_factory=list)
    ema_decay: float = 0.999                    # 0 disables the EMA
    ema_warmup: int = 200
    val_every: int = 5
    seed: int = 0
    workers: int = 1
    threads: int | None = None                  # torch intra-op threads; None keeps the default
    channels_last: bool = True                  # 2x faster training on CPU for depthwise nets
    amp: str | None = None                      # None | bf16: CPU autocast, ~1.5x faster on AVX512-BF16 CPUs
    grad_clip: float | None = None              # max global gradient norm; None = no clipping
    out: str = "runs"
    init_from: str | None = None                # weights file: copy every tensor whose name and shape match
    train_options: dict = field(default_factory=dict)  # architecture options of this run; its weight files record them
    iters_per_epoch: int | None = None          # cap (for smoke tests); None = whole dataset
    stop_after: int | None = None               # end this run after that epoch; the lr schedule still spans `epochs`
    val_limit: int | None = None                # score only the first N val images (smoke tests)


class TrainError(RtsegError):
    pass


def load_train_config(path: str, **overrides) -> TrainConfig:
    data = load_yaml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(TrainConfig, data, str(path))


def _class_ids(names: list[str], class_names: list[str]) -> list[int]:
    """Class names (case-insensitive) -> ids of the dataset's class table."""
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    unknown = [n for n in names if str(n).lower() not in lookup]
    if unknown:
        raise TrainError(f"focus_classes: unknown class {', '.join(map(str, unknown))}; "
                         f"the classes are {', '.join(class_names)}")
    return [lookup[str(n).lower()] for n in names]


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    # No weight decay on norms and biases: decaying BN scales only fights the normalisation.
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone.") or name.startswith(("shared.", "deep.")), p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_backbone, no_decay), params in groups.items():
        lr_mult = 1.0 if is_backbone else cfg.head_lr_mult
        out.append({"params": params, "lr_mult": lr_mult, "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def _init_from(model: nn.Module, path: str, log: Callable[[str], None]) -> None:
    """Warm start: copy the tensors of another rtseg weight file whose names and shapes match
    (e.g. a trained backbone into a different head). Reports how much was taken."""
    from rtseg.checkpoint import load_weights

    state = load_weights(path)[0]
    own = model.state_dict()
    taken = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(taken, strict=False)
    log(f"init_from {path}: {len(taken)}/{len(own)} tensors copied")


def _lr_at(cfg: TrainConfig, it: int, total: int, per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * per_epoch)
    if it < warm:
        return cfg.lr * (it + 1) / warm
    return cfg.lr * (1 - (it - warm) / max(1, total - warm)) ** cfg.poly_power


def _build_loss(cfg: TrainConfig, num_classes: int, ignore: int, train_ds) -> nn.Module:
    opts = dict(cfg.loss_options)
    if cfg.class_weights:
        counts, present = count_pixels((train_ds.load_label(i) for i in range(len(train_ds))),
                                       num_classes, ignore)
        opts["weight"] = class_weights(counts, cfg.class_weights, present_pixels=present).tolist()
    loss = build_loss(cfg.loss, ignore_index=ignore, **opts)
    return DeepSupervisionLoss(loss, cfg.aux_weights)


def _as_float(out):
    """FP32 copy of a model's training output: one tensor or a tuple of them (main + auxiliary)."""
    if isinstance(out, (tuple, list)):
        return type(out)(t.float() for t in out)
    return out.float()


def _first_non_finite(model: nn.Module) -> str | None:
    """Name of the first weight or BatchNorm statistic that is inf or NaN, or None.

    A diverging channel can blow up to inf in a BN ``running_var`` while the loss stays finite
    (eval divides by sqrt(inf) and the channel goes silent), and the EMA then turns it into NaN
    and the whole averaged model into garbage. Checking once per epoch stops the run there
    instead of saving "best" weights that predict one class.
    """
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return name
    return None


def _scoring_sets(cfg: TrainConfig, data_name: str, ignore: int) -> tuple[dict, str]:
    """The labelled sets scored at each validation epoch, and the key that picks the best file.

    With a held-out drive the pick is made on that drive (a road the weights never saw) and val
    is reported beside it. Without one, val picks, unless val is part of the training split
    (final weights on train+val): then nothing clean is left to pick on and the last scored
    epoch is kept ("last").
    """
    sets = {"val": labelled_dataset(data_name, cfg.root, cfg.val_split, ignore_index=ignore)}
    if cfg.holdout:
        sets = {"holdout": labelled_dataset(data_name, cfg.root, cfg.holdout_split, ignore_index=ignore,
                                            sequences=[cfg.holdout]), **sets}
        return sets, "holdout"
    seen = set(split_parts(cfg.val_split)) & set(split_parts(cfg.train_split))
    return sets, ("last" if seen else "val")


def _check(cfg: TrainConfig) -> None:
    """Rejects values that would only fail (or silently misbehave) hours into a run."""
    if cfg.stop_after is not None and cfg.stop_after < 1:
        raise TrainError(f"stop_after must be an epoch number >= 1, got {cfg.stop_after}")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise TrainError(f"grad_clip must be a positive number, got {cfg.grad_clip}")
    if cfg.amp not in (None, "bf16"):
        raise TrainError(f"amp must be bf16 or empty, got '{cfg.amp}'")


def _train_sets(cfg: TrainConfig, preset: ModelPreset, dcfg: DatasetConfig) -> Callable[[int], Any]:
    """epoch -> the augmented training set of that epoch (its random crops seeded by the epoch)."""
    ignore = dcfg.ignore_index
    focus = _class_ids(cfg.focus_classes, dcfg.class_names)

    def train_set(epoch: int):
        t = train_transform(cfg.crop_size, cfg.scale_range, preset.mean, preset.std, ignore_index=ignore,
                            jitter=cfg.jitter, focus_classes=focus, focus_p=cfg.focus_p,
                            appearance=cfg.appearance)
        # The held-out drive is removed here, from every part of the split: none of its frames
        # may reach a gradient step.
        return labelled_dataset(cfg.data or dcfg.name, cfg.root, cfg.train_split, t, ignore_index=ignore,
                                seed=cfg.seed * 100_003 + epoch,
                                exclude_sequences=[cfg.holdout] if cfg.holdout else None)
    return train_set


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def _build_model(cfg: TrainConfig, preset: ModelPreset, num_classes: int, log: Callable[[str], None]) -> nn.Module:
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_from_preset(preset, num_classes, **cfg.train_options)
    if cfg.init_from:
        _init_from(model, cfg.init_from, log)
    return model.to(memory_format=_memory_format(cfg))


def _build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise TrainError(f"optimizer must be sgd or adamw, got '{cfg.optimizer}'")


def _resume(last: Path, model: nn.Module, opt: torch.optim.Optimizer, ema: ModelEMA | None, name: str,
            log: Callable[[str], None]) -> dict:
    """Loads ``last.pt`` into the model, optimizer and EMA if it exists; returns the run's counters."""
    state = {"epoch": 0, "best_miou": -1.0, "elapsed": 0.0, "history": []}
    if not last.exists():
        return state
    saved = load_state(last)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if ema is not None and "ema" in saved:
        ema.load_state_dict(saved["ema"])
    state = {k: saved[k] for k in state}
    log(f"resuming {name} from epoch {state['epoch']} (best mIoU {state['best_miou']:.4f})")
    return state


def _save_last(last: Path, model: nn.Module, opt: torch.optim.Optimizer, ema: ModelEMA | None,
               state: dict) -> None:
    save_state(last, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                      **({"ema": ema.state_dict()} if ema is not None else {}), **state})


def _iters_per_epoch(cfg: TrainConfig, train_set) -> int:
    per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    return min(per_epoch, cfg.iters_per_epoch) if cfg.iters_per_epoch else per_epoch


def train_one_epoch(model: nn.Module, criterion: nn.Module, opt: torch.optim.Optimizer, ema: ModelEMA | None,
                    loader: DataLoader, cfg: TrainConfig, epoch: int, per_epoch: int, bar: Progress) -> dict:
    """One pass over ``loader`` (at most ``per_epoch`` batches); returns the epoch's history record.

    Raises:
        TrainError: the loss, a weight or a BatchNorm statistic stopped being finite.
    """
    mf, total = _memory_format(cfg), per_epoch * cfg.epochs
    model.train()
    t0, seen, loss_sum, grad_max, skipped = time.perf_counter(), 0, 0.0, 0.0, 0
    lr = _lr_at(cfg, epoch * per_epoch, total, per_epoch)
    for i, (x, y) in enumerate(loader):
        if i >= per_epoch:
            break
        lr = _lr_at(cfg, epoch * per_epoch + i, total, per_epoch)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        # Weights, gradients and the optimizer stay FP32; only the forward's matmuls and convs
        # run in bfloat16. The loss is computed in FP32 (log-softmax over bf16 loses too much).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            out = model(x.to(memory_format=mf))
        loss = criterion(_as_float(out), y)
        if not torch.isfinite(loss):
            raise TrainError(f"loss became {loss.item()} at epoch {epoch + 1} iteration {i}; "
                             f"lower lr (now {lr:.3g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            # A single huge gradient (a channel whose batch variance collapses) is what
            # sends a depthwise filter to 1e28; clipping the global norm keeps the step bounded.
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            grad_max = max(grad_max, norm)
            if not math.isfinite(norm):
                # The norm overflowed (or a gradient is inf/NaN): clipping would scale by 0 and
                # turn inf into NaN. Skip the step, as mixed-precision loss scalers do.
                skipped += 1
                opt.zero_grad(set_to_none=True)
        opt.step()
        if ema is not None:
            ema.update(model)
        seen += len(x)
        loss_sum += loss.item() * len(x)
        bar.update(1, epoch=f"{epoch + 1}/{cfg.epochs}", loss=loss.item(), lr=lr,
                   img_s=seen / (time.perf_counter() - t0))
    record = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "seconds": time.perf_counter() - t0}
    if cfg.grad_clip:
        record["grad_norm_max"] = grad_max  # before clipping: how often the clip actually bites
        record["skipped_steps"] = skipped
    bad = _first_non_finite(model) or (_first_non_finite(ema.module) if ema is not None else None)
    if bad:
        raise TrainError(f"{bad} became inf/NaN during epoch {epoch + 1}; lower lr (now {lr:.3g}), "
                         f"set grad_clip, or train without amp. last.pt still holds epoch {epoch}")
    return record


def evaluate_sets(model: nn.Module, meta: ModelMeta, scoring: dict, limit: int | None) -> dict:
    """``{"<set>_miou": mIoU}`` of ``model`` (in eval mode) on each scoring set, scored as ``rtseg eval`` does."""
    return {f"{key}_miou": evaluate(TorchBackend(model, meta), ds, limit=limit, progress=False)["miou"]
            for key, ds in scoring.items()}


def _is_best(record: dict, state: dict, pick: str) -> bool:
    """Whether this scored epoch becomes ``best.safetensors``; records its score as the best if so."""
    score = record["val_miou" if pick == "last" else f"{pick}_miou"]
    if pick == "last" or score > state["best_miou"]:
        state["best_miou"] = score
        return True
    return False


def fit(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] = log_stderr) -> dict:
    """Trains (or resumes) the run described by ``cfg``; returns the best validation result.

    Args:
        progress: draw a progress bar (stderr).
        log: receives the resume and warm-start notices and one summary line per scored epoch.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _check(cfg)
    preset = load_preset(cfg.preset)
    dcfg = load_dataset_config(preset.dataset)
    run_dir = Path(cfg.out) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)

    train_set = _train_sets(cfg, preset, dcfg)
    scoring, pick = _scoring_sets(cfg, cfg.data or dcfg.name, dcfg.ignore_index)
    model = _build_model(cfg, preset, dcfg.num_classes, log)
    # The weight files record the network as trained and validated here, so a run's best file
    # loaded by path runs the same way (e.g. ENet stages 1-2: `upsample: unpool` under a bilinear
    # preset). Shipped weights loaded by name still take the preset's own options.
    trained = replace(preset, options={**preset.options, **cfg.train_options})
    criterion = _build_loss(cfg, dcfg.num_classes, dcfg.ignore_index, train_set(0))
    opt = _build_optimizer(cfg, model)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
    state = _resume(run_dir / "last.pt", model, opt, ema, cfg.name, log)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    per_epoch = _iters_per_epoch(cfg, train_set(0))
    meta = ModelMeta(preset.name, dcfg.class_names, dcfg.colors, preset.mean, preset.std,
                     tuple(preset.input_size), dcfg.ignore_index)
    # stop_after: a run cut short on purpose (a staged recipe) keeps the long run's lr curve.
    last_epoch = min(cfg.epochs, cfg.stop_after or cfg.epochs)
    bar = Progress(max(last_epoch - state["epoch"], 0) * per_epoch, f"train {cfg.name}", "it", enabled=progress)
    for epoch in range(state["epoch"], last_epoch):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # shuffling and worker seeds of this epoch
        loader = DataLoader(train_set(epoch), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.workers, persistent_workers=False)
        record = train_one_epoch(model, criterion, opt, ema, loader, cfg, epoch, per_epoch, bar)
        state["elapsed"] += record["seconds"]
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == last_epoch:
            eval_model = (ema.module if ema is not None else model).eval()
            record.update(evaluate_sets(eval_model, meta, scoring, cfg.val_limit))
            if _is_best(record, state, pick):
                info = {**{k: v for k, v in record.items() if k.endswith("_miou")}, "picked_on": pick,
                        "epoch": epoch + 1, "train_seconds": round(state["elapsed"]), "train_config": asdict(cfg)}
                save_weights(run_dir / "best.safetensors", eval_model, trained, dcfg, info)
            scores = "  ".join(f"{k} mIoU {record[f'{k}_miou']:.4f}" for k in scoring)
            log(f"\nepoch {epoch + 1}: loss {record['loss']:.4f}  {scores} (best {pick} {state['best_miou']:.4f})")
        state["history"].append(record)
        state["epoch"] = epoch + 1
        _save_last(run_dir / "last.pt", model, opt, ema, state)
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
    bar.close()
    return {"best_miou": state["best_miou"], "epochs": state["epoch"], "seconds": state["elapsed"],
            "run_dir": str(run_dir)}
