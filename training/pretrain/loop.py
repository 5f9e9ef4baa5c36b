"""VIS-MAE pretraining: a Swin masked autoencoder on unlabeled images, on one GPU or many.

Single process (GPU, CPU or Apple MPS):

    python -m training.pretrain --data shards/ --output runs/mae --model vismae \\
        --epochs 800 --batch-size 64

Many GPUs / many nodes (DistributedDataParallel; --batch-size is per process):

    torchrun --nproc_per_node 8 -m training.pretrain --data shards/ --output runs/mae
    torchrun --nnodes 4 --nproc_per_node 8 --node_rank $RANK --rdzv_backend c10d \\
        --rdzv_endpoint $HEAD:29500 -m training.pretrain --data shards/ --output runs/mae

``--data`` is a folder made by ``python -m training.prepare`` (sharded, any number of
images) or, for small jobs, a plain folder of PNG/JPEG/TIFF images. Training state
is saved atomically every ``--save-every`` steps and at each epoch end;
``--resume auto`` continues exactly where a killed run stopped. The pretrained
weights are exported to ``OUTPUT/model`` (safetensors + model card) for
``python -m training.finetune`` and the napari plugin.
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.data.preprocessing import Preprocessing
from training.models import PRESETS, build_model
from training.models.masking import mask_to_pixels, unit_mask_from_noise, units_to_tokens
from training.pretrain.data import open_dataset
from training.pretrain.resume import find_resume, load_state, rng_state, save_state, set_rng_state
from training.runtime import distributed as D
from training.runtime.atomic import atomic_path, atomic_write_text
from training.runtime.device import autocast_dtype, default_device_name, flush_denormals
from training.runtime.optim import WarmupCosine, build_optimizer
from training.runtime.progress import Progress
from training.runtime.threads import configure_threads
from training.weights.checkpoint import save_checkpoint

log = logging.getLogger("training.pretrain")


@dataclass
class PretrainConfig:
    """Every option of a pretraining run (CLI flags, YAML keys and saved state share it)."""

    data: str = ""
    output: str = "runs/pretrain"
    model: str = "vismae"
    input_size: int = 224
    epochs: int = 800
    batch_size: int = 64  # per process
    accum_steps: int = 1
    lr: float = 1e-4  # absolute; the paper's value (the official code defaults to 1e-3)
    min_lr: float = 0.0
    warmup_epochs: float = 10.0
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    clip_grad: float = 0.0  # max grad norm; 0 = off (as the official code)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    drop_path: float = 0.1
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"
    threads: int = 0  # CPU threads per process; 0 = $OMP_NUM_THREADS, else the usable CPUs
    seed: int = 0
    num_workers: int = min(8, os.cpu_count() or 1)
    compile: bool = False
    resume: str = ""  # "", "auto", a step-*.pt file or a run folder
    save_every: int = 1000  # steps; also at every epoch end
    keep_last: int = 3
    log_every: int = 20
    vis_every: int = 500  # PNG of input / mask / reconstruction; 0 = off
    tensorboard: bool = False
    max_steps: int = 0  # stop after this many steps (0 = run all epochs)
    kill_after_step: int = 0  # testing aid: SIGKILL this process after that step

    def model_config(self):
        preset = PRESETS[self.model]
        return preset.replace(img_size=self.input_size, mask_ratio=self.mask_ratio,
                              norm_pix_loss=self.norm_pix_loss, drop_path_rate=self.drop_path)


HELP = {
    "data": "folder from `python -m training.prepare`, or a folder of 2-D images",
    "output": "run folder: checkpoints/, metrics.jsonl, samples/, model/",
    "model": f"model preset: {', '.join(PRESETS)}",
    "input_size": "image side in pixels (multiple of 32)",
    "batch_size": "images per process per step (global batch = this x processes x accum)",
    "accum_steps": "gradient accumulation steps per optimizer update",
    "lr": "peak learning rate, absolute (paper: 1e-4; official code: 1e-3)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_epochs": "linear warm-up length, in epochs (per-iteration schedule)",
    "weight_decay": "AdamW weight decay (not applied to norms, biases, tables, mask token)",
    "clip_grad": "clip the gradient norm to this value (0 = off)",
    "mask_ratio": "fraction of 16x16-pixel mask units hidden from the encoder",
    "norm_pix_loss": "per-patch normalised reconstruction targets",
    "drop_path": "stochastic depth rate (linear over the blocks)",
    "precision": "auto = bf16 autocast on GPUs that support it, else fp32; fp16 uses a grad scaler",
    "device": "auto, cuda, mps or cpu (under torchrun each process takes its LOCAL_RANK GPU)",
    "num_workers": "data-loading processes per training process",
    "threads": "CPU threads per training process (0 = $OMP_NUM_THREADS, else the CPUs this "
               "process may use); OpenMP waits passively unless $OMP_WAIT_POLICY is set",
    "seed": "seed of initialisation, data order, masks and augmentation",
    "epochs": "passes over the data",
    "compile": "torch.compile the model",
    "resume": "'auto' (newest state in OUTPUT/checkpoints), a step-*.pt file, or a run folder",
    "save_every": "save the training state every N steps (and at each epoch end)",
    "keep_last": "training states to keep",
    "log_every": "log loss / lr / throughput every N steps",
    "vis_every": "write a PNG of input / mask / reconstruction every N steps (0 = off)",
    "tensorboard": "also log to TensorBoard (needs the tensorboard package)",
    "max_steps": "stop after N steps in total (0 = all epochs)",
    "kill_after_step": argparse.SUPPRESS,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml",
                   help="YAML file of options (keys as below, '-' or '_'); flags override it")
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.type == "bool" or isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=HELP.get(f.name, ""))
        else:
            h = HELP.get(f.name, f.name.replace("_", " "))
            p.add_argument(flag, type=type(default), default=default,
                           help=h if h == argparse.SUPPRESS else f"{h} (default: {default})")
    return p


def parse_args(argv=None) -> PretrainConfig:
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        import yaml

        try:
            values = yaml.safe_load(Path(known.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            parser.error(f"--config {known.config}: {e}")
        names = {f.name for f in dataclasses.fields(PretrainConfig)}
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - names)
        if unknown:
            parser.error(f"--config {known.config}: unknown options {unknown}")
        parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    cfg = PretrainConfig(**args)
    if not cfg.data:
        parser.error("--data is required")
    if cfg.model not in PRESETS:
        parser.error(f"--model {cfg.model!r}: choose from {', '.join(PRESETS)}")
    if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
        parser.error("--precision must be auto, fp32, bf16 or fp16")
    return cfg


class MetricsLog:
    """JSON lines, one per logged step (rank 0 only). On resume, lines after the resumed
    step are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        elif resume_step is None and path.exists():
            path.unlink()
        self.file = open(path, "a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def save_samples(path: Path, x: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, model,
                 prep: Preprocessing) -> None:
    """A grid: rows = up to 4 samples; columns = input, masked input, reconstruction."""
    from skimage.io import imsave

    n = min(4, x.shape[0])
    grid_hw = (x.shape[-2] // model.cfg.patch_size, x.shape[-1] // model.cfg.patch_size)
    with torch.no_grad():
        img = (x[:n, :1].float() * prep.std + prep.mean).clamp(0, 1).cpu()
        m = mask_to_pixels(mask[:n].float(), grid_hw, model.cfg.patch_size).cpu()
        rec = model.unpatchify(pred[:n].float(), grid_hw).mean(1, keepdim=True)
        rec = (rec * prep.std + prep.mean).clamp(0, 1).cpu()
        if model.cfg.norm_pix_loss:  # targets were per-patch normalised: show visible pixels
            rec = img * (1 - m) + rec * m
    rows = [torch.cat([img[i, 0], img[i, 0] * (1 - m[i, 0]) + 0.5 * m[i, 0],
                       img[i, 0] * (1 - m[i, 0]) + rec[i, 0] * m[i, 0]], dim=1) for i in range(n)]
    grid = (torch.cat(rows, dim=0).numpy() * 255).astype(np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, grid, check_contrast=False)


def _check_resume_compatible(state: dict, cfg: PretrainConfig, model_cfg) -> None:
    saved = state["config"]
    if saved.get("model_config") != model_cfg.to_dict():
        diff = {k: (saved.get("model_config", {}).get(k), v) for k, v in model_cfg.to_dict().items()
                if saved.get("model_config", {}).get(k) != v}
        raise SystemExit(f"--resume: the checkpoint's model differs from this run's: "
                         f"{ {k: f'{a} -> {b}' for k, (a, b) in diff.items()} }")
    for key in ("batch_size", "accum_steps", "seed", "epochs"):
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
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)

    model_cfg = cfg.model_config()
    unit = model_cfg.mask_unit // model_cfg.patch_size
    units_hw = (cfg.input_size // model_cfg.mask_unit,) * 2
    dataset = open_dataset(cfg.data, cfg.input_size, units_hw[0] * units_hw[1], cfg.seed)
    prep: Preprocessing = dataset.prep  # what prepare / the image folder applied: into the card
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
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    updates_per_epoch = steps_per_epoch // cfg.accum_steps
    scheduler = WarmupCosine(optimizer, total_steps=cfg.epochs * updates_per_epoch,
                             warmup_steps=round(cfg.warmup_epochs * updates_per_epoch),
                             min_lr_ratio=cfg.min_lr / cfg.lr if cfg.lr else 0.0)
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    epoch, step_in_epoch, global_step = 0, 0, 0
    resume_path = find_resume(cfg.resume, ckpt_dir) if cfg.resume else None
    if resume_path is not None:
        state = load_state(resume_path)
        _check_resume_compatible(state, cfg, model_cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
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
        rngs = [rng_state()]
        if info.enabled:
            gathered = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "config": dataclasses.asdict(cfg) | {"model_config": model_cfg.to_dict()}}

    def checkpoint() -> None:
        state = train_state()  # every rank joins the RNG gather
        if info.is_main:
            save_state(ckpt_dir, state, cfg.keep_last)

    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    progress = None
    if info.is_main:  # a bar on a terminal, else a plain log line every 30 s (nohup, clusters)
        progress = Progress(total_steps, "pretrain", unit="step", initial=global_step, logger=log)

    loss_sum = torch.zeros((), device=device)
    skipped = torch.zeros((), device=device)
    t_last, n_last = time.perf_counter(), 0
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
            sync = contextlib.nullcontext() if (last_micro or not info.enabled) else train_model.no_sync()
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
            global_step += 1
            step_in_epoch += 1
            n_last += x.shape[0] * info.world_size
            if progress is not None:
                progress.update(1)

            if global_step % cfg.log_every == 0 or global_step == total_steps:
                mean_loss = D.all_reduce_mean(loss_sum / ((global_step - 1) % cfg.log_every + 1), info)
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
                t_last, n_last = time.perf_counter(), 0
            if info.is_main and cfg.vis_every and global_step % cfg.vis_every == 0:
                save_samples(out / "samples" / f"step-{global_step:09d}.png", x, mask, pred, model, prep)
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
        metrics.close()
        if tb is not None:
            tb.close()
        last = _last_loss(out / "metrics.jsonl")
        exported = save_checkpoint(
            model, out / "model", overwrite=True, name=f"{cfg.model}-mae",
            preprocessing=prep.to_dict(),
            description="VIS-MAE masked autoencoder pretrained with napari-vismae",
            provenance={"pretraining": {"data": str(cfg.data), "images": len(dataset),
                                        "modalities": getattr(dataset, "modalities", {}),
                                        "epochs_completed": epoch, "steps": global_step,
                                        "global_batch": cfg.batch_size * info.world_size * cfg.accum_steps,
                                        "lr": cfg.lr, "mask_ratio": cfg.mask_ratio},
                        "metrics": {"final_loss": last}})
        log.info("exported pretrained weights to %s", exported)
    # Free DDP (and its gloo/NCCL hooks) before the process group is torn down.
    del train_model
    gc.collect()
    D.barrier(info)
    return exported


def _last_loss(path: Path):
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return json.loads(lines[-1])["loss"] if lines else None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    configure_threads(cfg.threads or None)
    try:
        pretrain(cfg)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
