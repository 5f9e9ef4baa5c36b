"""The VIS-MAE pretraining loop (``python -m training.pretrain``); options and their CLI
live in :mod:`training.pretrain.config`, the metrics log and sample PNGs in
:mod:`training.pretrain.outputs`."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.data.preprocessing import Preprocessing
from training.models import build_model
from training.models.masking import unit_mask_from_noise, units_to_tokens
from training.pretrain.config import HELP, PretrainConfig, build_parser, parse_args  # noqa: F401
from training.pretrain.data import IndexSubset, open_dataset
from training.pretrain.outputs import (
    MetricsLog,
    _last_loss,
    describe_check,
    input_use_check,
    save_samples,
)
from training.pretrain.resume import find_resume, load_state, rng_state, save_state, set_rng_state
from training.pretrain.run_folder import RunFolderError, last_state_note, prepare_run_folder
from training.runtime import distributed as D
from training.runtime.atomic import atomic_write_text, no_space_left
from training.runtime.device import autocast_dtype, default_device_name, flush_denormals
from training.runtime.optim import WarmupCosine, build_optimizer
from training.runtime.progress import Progress
from training.runtime.threads import configure_threads
from training.weights.checkpoint import save_checkpoint

log = logging.getLogger("training.pretrain")

def _check_resume_compatible(state: dict, cfg: PretrainConfig, model_cfg) -> None:
    saved = state["config"]
    if saved.get("model_config") != model_cfg.to_dict():
        diff = {k: (saved.get("model_config", {}).get(k), v) for k, v in model_cfg.to_dict().items()
                if saved.get("model_config", {}).get(k) != v}
        raise SystemExit(f"--resume: the checkpoint's model differs from this run's: "
                         f"{ {k: f'{a} -> {b}' for k, (a, b) in diff.items()} }")
    for key in ("batch_size", "accum_steps", "seed", "epochs", "augment", "aug_crop_scale",
                "aug_rotate", "aug_flip", "aug_intensity", "check_images"):
        if saved.get(key) != getattr(cfg, key):
            log.warning("resuming with %s=%s (the checkpoint used %s): the run will not be "
                        "identical to an uninterrupted one", key, getattr(cfg, key), saved.get(key))


def pretrain(cfg: PretrainConfig) -> Path | None:
    """Run pretraining; returns the exported model folder (rank 0) or None."""
    info = D.init_distributed(cfg.device if cfg.device != "auto" else
                              default_device_name())
    exported = _pretrain(cfg, info)  # on an error, leave the group alone: torchrun stops the peers
    D.cleanup(info)
    return exported


def _pretrain(cfg: PretrainConfig, info: D.DistInfo) -> Path | None:
    device = D.resolve_device(cfg.device, info)
    flush_denormals(device)
    out = Path(cfg.output)
    ckpt_dir = out / "checkpoints"
    if info.is_main:  # one run per folder; no leftovers of interrupted writes; writable
        prepare_run_folder(out, cfg.resume, cfg.overwrite)
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)

    model_cfg = cfg.model_config()
    unit = model_cfg.mask_unit // model_cfg.patch_size
    units_hw = (cfg.input_size // model_cfg.mask_unit,) * 2
    augmentation = cfg.augmentation()
    full_dataset = open_dataset(cfg.data, cfg.input_size, units_hw[0] * units_hw[1], cfg.seed,
                                augment=augmentation, flip=cfg.aug_flip)
    prep: Preprocessing = full_dataset.prep  # what prepare / the image folder applied: the card
    dataset, check_idx, held_out = _split_check(full_dataset, cfg)
    from training.pretrain.data import EpochSampler

    sampler = EpochSampler(len(dataset), info.rank, info.world_size, cfg.seed)
    steps_per_epoch = (len(dataset) // info.world_size) // cfg.batch_size
    steps_per_epoch -= steps_per_epoch % cfg.accum_steps
    if steps_per_epoch == 0:
        raise SystemExit(f"--data {cfg.data}: {len(dataset)} images are fewer than one step needs "
                         f"({cfg.batch_size} x {info.world_size} processes x {cfg.accum_steps} "
                         "accumulation); lower --batch-size")
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, generator=torch.Generator().manual_seed(cfg.seed))

    model = build_model("mae", model_cfg).to(device)
    model.fast = cfg.fast  # same weights either way; only the encoder's forward differs
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    updates_per_epoch = steps_per_epoch // cfg.accum_steps
    scheduler = WarmupCosine(optimizer, total_steps=cfg.epochs * updates_per_epoch,
                             warmup_steps=round(cfg.warmup_epochs * updates_per_epoch),
                             min_lr_ratio=cfg.min_lr / cfg.lr if cfg.lr else 0.0)
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    epoch, step_in_epoch, global_step = 0, 0, 0
    window = None
    resume_path = find_resume(cfg.resume, ckpt_dir) if cfg.resume else None
    if resume_path is not None:
        state = load_state(resume_path)
        _check_resume_compatible(state, cfg, model_cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        global_step = state["global_step"]
        windows = state.get("log_window") or []
        window = windows[info.rank] if info.rank < len(windows) else None
        if info.is_main:
            log.info("resumed from %s at epoch %d, step %d", resume_path, epoch, global_step)

    train_model = model
    if cfg.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = tb = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg_record = dataclasses.asdict(cfg) | {"world_size": info.world_size,
                                                "model_config": model_cfg.to_dict()}
        atomic_write_text(out / "config.json", json.dumps(cfg_record, indent=2) + "\n")
        metrics = MetricsLog(out / "metrics.jsonl", global_step if resume_path else None)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("--tensorboard: the tensorboard package is not installed; skipping")

    def train_state() -> dict:
        # The open logging window (loss sum and step count since the last log line) travels
        # with the state, so the first mean logged after a resume is exact.
        mine = (rng_state(), {"loss_sum": loss_sum.detach().cpu().clone(), "steps": n_window,
                              "skipped": skipped.detach().cpu().clone()})
        pairs = [mine]
        if info.enabled:
            pairs = [None] * info.world_size
            torch.distributed.all_gather_object(pairs, mine)
        rngs, windows = [p[0] for p in pairs], [p[1] for p in pairs]
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                "log_window": windows,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "config": dataclasses.asdict(cfg) | {"model_config": model_cfg.to_dict()}}

    def checkpoint() -> None:
        state = train_state()  # every rank joins the RNG gather
        if info.is_main and save_state(ckpt_dir, state, cfg.keep_last) is None:
            log.error("training continues; the next save will try again (%s)",
                      last_state_note(ckpt_dir))

    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    progress = None
    if info.is_main:  # a bar on a terminal, else a plain log line every 30 s (nohup, clusters)
        progress = Progress(total_steps, "pretrain", unit="step", initial=global_step, logger=log)

    loss_sum = torch.zeros((), device=device)
    skipped = torch.zeros((), device=device)
    n_window = 0  # steps summed in loss_sum since the last log line
    if resume_path is not None and window is not None:
        loss_sum.copy_(window["loss_sum"])
        skipped.copy_(window["skipped"])
        n_window = int(window["steps"])
    t_last, n_last = time.perf_counter(), 0
    check_batch = checks = last_check = None
    if info.is_main and check_idx:
        check_batch = _check_batch(full_dataset, check_idx, dataset, cfg, units_hw, unit, prep,
                                   device)
        checks = MetricsLog(out / "check.jsonl", global_step if resume_path else None)

    def run_check() -> dict | None:
        if check_batch is None:
            return None
        result = {"step": global_step, "held_out": held_out, "images": len(check_idx)}
        result |= input_use_check(model, *check_batch)
        checks.write(result)
        (log.info if result["uses_input"] else log.warning)(
            "input-use check at step %d (%d %s images): %s", global_step, len(check_idx),
            "held-out" if held_out else "training", describe_check(result))
        return result

    done = global_step >= total_steps
    while not done and epoch < cfg.epochs:
        sampler.set_epoch(epoch, start=step_in_epoch * cfg.batch_size)
        train_model.train()
        for x, noise, ok in loader:
            if step_in_epoch >= steps_per_epoch:
                break
            x = (x.to(device, non_blocking=True) - prep.mean) / prep.std
            unit_mask = unit_mask_from_noise(noise.to(device, non_blocking=True), cfg.mask_ratio)
            mask = units_to_tokens(unit_mask, units_hw, unit)
            skipped += (~ok).sum().to(device)
            # Per-step seed: stochastic depth is reproducible after a resume.
            torch.manual_seed(cfg.seed * 1_000_003 + global_step * 1_009 + info.rank)
            last_micro = (step_in_epoch + 1) % cfg.accum_steps == 0
            sync = (contextlib.nullcontext() if (last_micro or not info.enabled)
                    else train_model.no_sync())
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, pred, _ = train_model(x, mask=mask)
                scaler.scale(loss / cfg.accum_steps).backward()
            lr_used = optimizer.param_groups[0]["lr"]
            if last_micro:
                if cfg.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            loss_sum += loss.detach()
            n_window += 1
            global_step += 1
            step_in_epoch += 1
            n_last += x.shape[0] * info.world_size
            if progress is not None:
                progress.update(1)

            if global_step % cfg.log_every == 0 or global_step == total_steps:
                mean_loss = D.all_reduce_mean(loss_sum / n_window, info)
                n_skipped = int(D.all_reduce_mean(skipped, info).item() * info.world_size)
                value = mean_loss.item()
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss became {value} at step {global_step}: lower --lr, set --clip-grad, "
                        "or use --precision fp32")
                dt = time.perf_counter() - t_last
                record = {"step": global_step, "epoch": epoch, "loss": value,
                          "lr": lr_used, "images_per_s": n_last / dt,
                          "skipped_files": n_skipped}
                if device.type == "cuda":
                    record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                if info.is_main:
                    metrics.write(record)
                    progress.update(0, loss=value, lr=record["lr"], epoch=epoch)
                    if tb is not None:
                        for k in ("loss", "lr", "images_per_s"):
                            tb.add_scalar(k, record[k], global_step)
                loss_sum.zero_()
                n_window = 0
                t_last, n_last = time.perf_counter(), 0
            if info.is_main and cfg.vis_every and global_step % cfg.vis_every == 0:
                save_samples(out / "samples" / f"step-{global_step:09d}.png", x, mask, pred,
                             model, prep)
            if cfg.check_every and global_step % cfg.check_every == 0:
                last_check = run_check()
            if cfg.save_every and global_step % cfg.save_every == 0 and last_micro:
                checkpoint()
            if cfg.kill_after_step and global_step == cfg.kill_after_step:
                os.kill(os.getpid(), signal.SIGKILL)
            if global_step >= total_steps:
                done = True
                break
        if step_in_epoch >= steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
            checkpoint()

    if progress is not None:
        progress.close()
    exported = None
    if info.is_main:
        if last_check is None or last_check["step"] != global_step:
            last_check = run_check()
        if checks is not None:
            checks.close()
        metrics.close()
        if tb is not None:
            tb.close()
        last = _last_loss(out / "metrics.jsonl")
        description = "VIS-MAE masked autoencoder pretrained with napari-vismae"
        if last_check is not None and not last_check["uses_input"]:
            description += (". WARNING: the input-use check failed; this model ignores its "
                            "input (" + describe_check(last_check) + ")")
        exported = save_checkpoint(
            model, out / "model", overwrite=True, name=f"{cfg.model}-mae",
            preprocessing=prep.to_dict(), description=description,
            provenance={"pretraining": {"data": str(cfg.data), "images": len(dataset),
                                        "modalities": getattr(dataset, "modalities", {}),
                                        "epochs_completed": epoch, "steps": global_step,
                                        "global_batch": (cfg.batch_size * info.world_size
                                                         * cfg.accum_steps),
                                        "lr": cfg.lr, "mask_ratio": cfg.mask_ratio,
                                        "mask_unit": cfg.mask_unit,
                                        "norm_pix_loss": cfg.norm_pix_loss,
                                        "augmentation": (augmentation.to_dict() if augmentation
                                                         else {"flip": cfg.aug_flip}),
                                        "input_use_check": last_check},
                        "metrics": {"final_loss": last}})
        log.info("exported pretrained weights to %s", exported)
    # Free DDP (and its gloo/NCCL hooks) before the process group is torn down.
    del train_model
    gc.collect()
    D.barrier(info)
    return exported


def _split_check(dataset, cfg: PretrainConfig):
    """-> (training dataset, indices of the input-use check's images, held out?). The check's
    images are a seeded pick; they leave the training set when it has >= 10x as many."""
    n, k = len(dataset), min(cfg.check_images, len(dataset))
    if not cfg.check_images or not k:
        return dataset, [], False
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 424_242)).tolist()
    if n >= 10 * cfg.check_images:
        return IndexSubset(dataset, sorted(perm[k:])), perm[:k], True
    return dataset, perm[:k], False


def _check_batch(full_dataset, check_idx, train_dataset, cfg, units_hw, unit, prep, device):
    """(images, fixed mask, mean training image), standardised, on ``device``; images are
    loaded without augmentation, unreadable ones skipped."""
    def load(indices):
        out = []
        for i in indices:
            try:
                out.append(torch.from_numpy(np.asarray(full_dataset.load(i), np.float32)))
            except Exception:
                continue
        return out

    imgs = load(check_idx)
    train_idx = getattr(train_dataset, "indices", range(len(full_dataset)))
    pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed + 1))
    mean_src = load([train_idx[i] for i in pick[:256].tolist()])
    if not imgs or not mean_src:
        return None
    x = (torch.stack(imgs)[:, None].to(device) - prep.mean) / prep.std
    mean_image = (torch.stack(mean_src).mean(0)[None, None].to(device) - prep.mean) / prep.std
    g = torch.Generator().manual_seed(cfg.seed + 77)
    noise = torch.rand(len(imgs), units_hw[0] * units_hw[1], generator=g)
    mask = units_to_tokens(unit_mask_from_noise(noise, cfg.mask_ratio), units_hw, unit)
    return x, mask.to(device), mean_image


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    configure_threads(cfg.threads or None)
    try:
        pretrain(cfg)
    except (FileNotFoundError, ValueError, RunFolderError) as e:
        log.error("%s", e)
        return 2
    except (OSError, RuntimeError) as e:
        if not no_space_left(e, cfg.output):
            raise
        where = getattr(e, "filename", None) or cfg.output
        log.error("no space left on %s (%s); %s", where, e,
                  last_state_note(Path(cfg.output) / "checkpoints"))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
