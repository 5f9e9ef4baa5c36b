"""Loading a model (the card's shape check included) never imports torch._dynamo or triton:
triton's LLVM segfaults beside Mesa's GL in the napari process (fresh interpreter)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys
from training.models import build_model
from training.weights.card_schema import expected_shapes
from training.weights.checkpoint import load_checkpoint
for name in ("abdomen-organs", "liver-lesion"):
    load_checkpoint("napari_vismae/models/" + name)
for preset in ("vismae", "vismae_official_seg", "small"):
    for task in ("segmentation", "classification", "mae"):
        kw = {} if task == "mae" else {"num_classes": 3}
        ref = build_model(task, preset, **kw)
        card = type("Card", (), {"task": task, "config": ref.cfg,
                                 "num_classes": kw.get("num_classes")})
        got = expected_shapes(card)
        assert got == {k: tuple(v.shape) for k, v in ref.state_dict().items()}, (preset, task)
bad = [m for m in ("torch._dynamo", "triton") if m in sys.modules]
assert not bad, bad
print("ok")
"""


def test_model_loading_and_shape_check_never_import_dynamo_or_triton():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
