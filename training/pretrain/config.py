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
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from training.models import PRESETS


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
    mask_unit: int = 16  # pixels; a multiple of the patch size that divides input_size
    norm_pix_loss: bool = False
    augment: bool = True  # random resized crop, rotation, flip, intensity jitter
    aug_crop_scale: float = 0.5
    aug_rotate: float = 10.0
    aug_flip: bool = True
    aug_intensity: float = 0.1
    check_every: int = 500  # input-use check every N steps (and at the end); 0 = off
    check_images: int = 16
    drop_path: float = 0.1
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"
    threads: int = 0  # CPU threads per process; 0 = $OMP_NUM_THREADS, else the usable CPUs
    seed: int = 0
    num_workers: int = min(8, os.cpu_count() or 1)
    compile: bool = False
    fast: bool = False  # encoder on the visible tokens only (training/models/mae_fast.py)
    resume: str = ""  # "", "auto", a step-*.pt file or a run folder
    overwrite: bool = False  # start over in a folder that holds an earlier run
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
                              mask_unit=self.mask_unit, norm_pix_loss=self.norm_pix_loss,
                              drop_path_rate=self.drop_path)

    def augmentation(self):
        """The :class:`PretrainAugment` of this run, or None (``--no-augment``: flips only)."""
        if not self.augment:
            return None
        from training.data.augment import PretrainAugment

        return PretrainAugment(crop_scale=self.aug_crop_scale, rotate_deg=self.aug_rotate,
                               flip=self.aug_flip, intensity=self.aug_intensity)


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
    "mask_ratio": "fraction of mask units hidden from the encoder",
    "mask_unit": "side of a square mask unit in pixels (a multiple of the patch size that "
                 "divides --input-size)",
    "norm_pix_loss": "per-patch normalised reconstruction targets",
    "augment": "augment each image (seeded per sample): random resized crop, rotation, flip, "
               "intensity jitter; --no-augment: horizontal flips only",
    "aug_crop_scale": "random resized crop: smallest area fraction of the image kept",
    "aug_rotate": "random rotation of up to this many degrees either way",
    "aug_flip": "random horizontal flip (also without --augment)",
    "aug_intensity": "intensity jitter strength s: brightness +-s, contrast x(1 +- 2s), "
                     "gamma exp(+-2s); 0 = off",
    "check_every": "every N steps and at the end, check on a fixed held-out batch that the "
                   "model uses what it sees (masked-patch error with the normal mask vs "
                   "everything masked vs the mean image); 0 = off",
    "check_images": "images in the input-use check's batch (held out of training when the "
                    "data has at least 10x as many)",
    "drop_path": "stochastic depth rate (linear over the blocks)",
    "precision": "auto = bf16 autocast on GPUs that support it, else fp32; fp16 uses a grad scaler",
    "device": "auto, cuda, mps or cpu (under torchrun each process takes its LOCAL_RANK GPU)",
    "epochs": "passes over the data",
    "beta1": "AdamW beta1 (the paper: 0.9)",
    "beta2": "AdamW beta2 (the paper: 0.95)",
    "seed": "seed of initialisation, data order, masks and augmentation",
    "num_workers": "data-loading processes per training process",
    "threads": "CPU threads per training process (0 = $OMP_NUM_THREADS, else the CPUs this "
               "process may use); OpenMP waits passively unless $OMP_WAIT_POLICY is set",
    "compile": "torch.compile the model",
    "fast": "fast pretraining: the encoder computes only the tokens that see visible pixels "
            "(~1.4x faster steps on CPU at mask ratio 0.75); masked tokens share one state and "
            "are not updated from visible neighbours, unlike the official (default) mode. "
            "Same weights: the model fine-tunes and loads unchanged",
    "resume": "'auto' (newest state in OUTPUT/checkpoints), a step-*.pt file, or a run folder",
    "overwrite": "start over in an --output folder that holds an earlier run (deletes its "
                 "states, log, samples and model); without it such a folder is refused",
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
    patch = PRESETS[cfg.model].patch_size
    if cfg.mask_unit <= 0 or cfg.mask_unit % patch or cfg.input_size % cfg.mask_unit:
        parser.error(f"--mask-unit {cfg.mask_unit}: must be a multiple of the patch size "
                     f"({patch}) that divides --input-size {cfg.input_size}")
    try:
        cfg.augmentation()
    except ValueError as e:
        parser.error(f"--aug-*: {e}")
    if cfg.fast:
        from training.models.mae_fast import check_fast_compatible

        try:
            check_fast_compatible(PRESETS[cfg.model].replace(img_size=cfg.input_size),
                                  (cfg.input_size // patch,) * 2)
        except ValueError as e:
            parser.error(f"--fast with --input-size {cfg.input_size}: {e}")
    if cfg.check_every < 0 or cfg.check_images < 0:
        parser.error("--check-every and --check-images must be >= 0")
    return cfg
