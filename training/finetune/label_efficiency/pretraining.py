"""The study's small MAE pretraining loop (``training.pretrain`` is the real one): per-sample
augmentation, the model's own mask unit and target normalisation, and the input-use check."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from training.data.augment import PretrainAugment, pretrain_augment
from training.data.preprocessing import Preprocessing, to_model_input
from training.models.input_check import describe_check, input_use_check
from training.runtime.progress import Progress


def augment_images(x: torch.Tensor, aug: PretrainAugment, seed: int) -> torch.Tensor:
    """(B, 1, S, S) [0, 1] -> augmented, image ``i`` drawn from generator ``seed * 1009 + i``."""
    out = []
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed * 1009 + i)
        out.append(pretrain_augment(x[i], aug, g))
    return torch.stack(out)


def pretrain_quick(model, images: torch.Tensor, steps: int, prep: Preprocessing,
                   batch_size: int = 16, lr: float = 1.5e-3, warmup: int | None = None,
                   seed: int = 0, device="cpu", progress: bool = False,
                   augment: PretrainAugment | None = None) -> list[float]:
    """A minimal MAE pretraining loop. Returns the losses.

    ``images``: (N, 1, S, S) in [0, 1]. Without ``augment`` only random horizontal flips
    (the earlier behaviour); with it, :class:`~training.data.augment.PretrainAugment` per
    sample, seeded by (seed, step, sample). AdamW (0.9, 0.95), warm-up + cosine, the model's
    own random window masking (its ``cfg.mask_unit``, ``cfg.norm_pix_loss``).
    """
    from training.runtime.device import flush_denormals
    from training.runtime.optim import WarmupCosine, build_optimizer

    flush_denormals(device)
    model.to(device).train()
    opt = build_optimizer(model, lr, 0.05)
    sched = WarmupCosine(opt, steps, warmup if warmup is not None else max(1, steps // 10))
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    order: list[int] = []
    losses = []
    bar = Progress(steps, "MAE pretraining", unit="step", enabled=progress)
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(n, generator=g).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        x = images[idx]
        if augment is not None:
            x = augment_images(x, augment, seed * 1_000_003 + step)
        else:
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        loss, _, _ = model(to_model_input(x.to(device), prep),
                           generator=g if torch.device(device).type == "cpu" else None)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MAE loss became {loss.item()}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(1, loss=losses[-1])
    bar.close()
    model.eval()
    return losses


def check_model(model, check: torch.Tensor, train: torch.Tensor, prep: Preprocessing) -> dict:
    """The input-use check on ``check`` images (not trained on), a fixed seeded mask."""
    x = to_model_input(check, prep)
    grid = (x.shape[-2] // model.cfg.patch_size, x.shape[-1] // model.cfg.patch_size)
    mask = model.random_mask(x.shape[0], grid, generator=torch.Generator().manual_seed(0))
    mean = to_model_input(train.mean(0, keepdim=True), prep)
    return input_use_check(model, x, mask, mean)


def pretrained_mae(cfg, data, work: Path, fast: bool = False, progress: bool = True,
                   reuse_only: bool = False) -> dict | None:
    """Pretrain (or reuse) the dataset's MAE -> {'path', 'seconds', 'losses', 'check', ...}.

    Cached in ``work/<dataset>/mae[_fast]-<key>/`` with ``pretrain.json``; reused when the
    settings that make it (:meth:`StudyConfig.pretrain_key`) match.
    """
    from training.models import build_model
    from training.weights.checkpoint import save_checkpoint

    key = cfg.pretrain_key(data.name, fast)
    folder = Path(work) / data.name / f"mae{'_fast' if fast else ''}-{key}"
    info_path = folder / "pretrain.json"
    if info_path.is_file() and (folder / "model").is_dir():
        return json.loads(info_path.read_text())
    if reuse_only:
        return None
    arch = model_config(cfg)
    torch.manual_seed(0)
    mae = build_model("mae", arch.replace(mask_unit=cfg.mask_unit,
                                          norm_pix_loss=cfg.norm_pix_loss))
    if fast:
        from training.models.mae_fast import check_fast_compatible
        grid = cfg.input_size // arch.patch_size
        check_fast_compatible(arch, (grid, grid))
        mae.fast = True
    aug = PretrainAugment() if cfg.pretrain_augment else None
    t0 = time.perf_counter()
    losses = pretrain_quick(mae, data.unlabeled, cfg.pretrain_steps, data.prep,
                            cfg.pretrain_batch, cfg.pretrain_lr, device=cfg.device,
                            progress=progress, augment=aug)
    mae.cpu()
    seconds = time.perf_counter() - t0
    mae.fast = False  # the check and the transfer use the default (official) semantics
    check = check_model(mae, data.check, data.unlabeled, data.prep)
    k = max(1, min(50, len(losses) // 5))
    info = {"dataset": data.name, "fast": fast, "steps": cfg.pretrain_steps,
            "images": int(data.unlabeled.shape[0]), "seconds": round(seconds, 1),
            "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
            "augment": aug.to_dict() if aug else None, "mask_unit": cfg.mask_unit,
            "norm_pix_loss": cfg.norm_pix_loss, "check": check,
            "check_text": describe_check(check), "key": key}
    path = save_checkpoint(mae, folder / "model", name=f"label-efficiency MAE ({data.name}"
                           f"{', fast' if fast else ''})", preprocessing=data.prep.to_dict(),
                           overwrite=True, provenance={"pretraining": info})
    info["path"] = str(path)
    from training.runtime.atomic import atomic_write_text
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return info


def model_config(cfg):
    """The study's architecture: the preset, at the study's input size and window."""
    from training.models.config import get_config
    over = {"img_size": cfg.input_size}
    if cfg.window_size:
        over["window_size"] = cfg.window_size
    return get_config(cfg.preset, **over)
