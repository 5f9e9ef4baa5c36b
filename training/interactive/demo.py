"""Headless demo: build the VIS-MAE models, run them on a sample image, save what they produce.

    python -m training.interactive.demo --output demo_output

Writes ``reconstruction.png`` (input / masked input / MAE reconstruction),
``segmentation.png`` and a checkpoint directory, and prints timings. Models
are randomly initialised unless ``--checkpoint`` names an MAE checkpoint (ours
or an official ``.pth``): this demo shows the pipeline, not a trained result.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def sample_image(size: int = 224) -> np.ndarray:
    """The Shepp-Logan head phantom (ships with scikit-image), in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)


def save_png(path: Path, image: np.ndarray) -> None:
    from skimage.io import imsave

    from training.runtime.atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, (np.clip(image, 0, 1) * 255).astype(np.uint8), check_contrast=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.interactive.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        help="folder for the results (default: %(default)s)")
    parser.add_argument("--preset", default="vismae", help="model preset (default: %(default)s)")
    parser.add_argument("--checkpoint", help="MAE checkpoint to start from (ours or official)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from training.data.preprocessing import Preprocessing, to_model_input
    from training.models import build_model
    from training.models.masking import mask_to_pixels
    from training.weights.checkpoint import init_from_checkpoint, save_checkpoint

    torch.manual_seed(args.seed)
    prep = Preprocessing()
    image = sample_image(prep.input_size)
    x = to_model_input(torch.from_numpy(image)[None, None], prep)

    mae = build_model("mae", args.preset).eval()
    seg = build_model("segmentation", args.preset, num_classes=3).eval()
    if args.checkpoint:
        print(init_from_checkpoint(mae, args.checkpoint).summary())
        print(init_from_checkpoint(seg, args.checkpoint).summary())

    with torch.no_grad():
        t0 = time.perf_counter()
        loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(args.seed))
        t_mae = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = seg(x).argmax(1)[0].numpy()
        t_seg = time.perf_counter() - t0

    recon = mae.unpatchify(pred)[0].mean(0).numpy() * prep.std + prep.mean
    pix_mask = mask_to_pixels(mask, (56, 56), 4)[0, 0].numpy()
    masked = image * (1 - pix_mask) + 0.5 * pix_mask
    args.output.mkdir(parents=True, exist_ok=True)
    save_png(args.output / "reconstruction.png", np.concatenate([image, masked, recon], axis=1))
    save_png(args.output / "segmentation.png", labels / max(labels.max(), 1))
    ckpt = save_checkpoint(seg, args.output / "segmentation-model", overwrite=True,
                           description="demo: randomly initialised VIS-MAE U-Net")
    print(f"MAE masked reconstruction: loss {loss.item():.4f} in {t_mae * 1000:.0f} ms")
    print(f"segmentation of one 224x224 slice: {t_seg * 1000:.0f} ms, classes {np.unique(labels)}")
    print(f"wrote {args.output / 'reconstruction.png'}, {args.output / 'segmentation.png'}, {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
