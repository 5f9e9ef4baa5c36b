"""training.runtime.optim.AdamW never imports torch._dynamo / triton (which segfault beside
Mesa's OpenGL in napari) and steps exactly like torch.optim.AdamW."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import copy, sys, torch
from torch import nn
from training.runtime.optim import WarmupCosine, build_optimizer, param_groups
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))
ref_net = copy.deepcopy(net)
opt = build_optimizer(net, 1e-2)
sched = WarmupCosine(opt, 20, 3)
xs = [torch.randn(4, 8) for _ in range(6)]
for x in xs:
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    sched.step()
state = opt.state_dict()
opt.load_state_dict(state)
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
assert "triton" not in sys.modules, "triton was imported"
# now (dynamo may load) the same steps with torch's AdamW
ref = torch.optim.AdamW(param_groups(ref_net, 0.05), lr=1e-2, betas=(0.9, 0.95))
ref_sched = torch.optim.lr_scheduler.LambdaLR(ref, sched.lr_lambdas[0])
for x in xs:
    ref.zero_grad()
    ref_net(x).pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(ref_net.parameters(), 1.0)
    ref.step()
    ref_sched.step()
diff = max((a - b).abs().max().item() for a, b in zip(net.parameters(), ref_net.parameters()))
assert diff < 1e-6, diff
ours = build_optimizer(copy.deepcopy(ref_net), 1e-2)
ours.load_state_dict(ref.state_dict())  # torch's checkpoints load into ours
print("OK", diff)
"""


def test_optimizer_is_dynamo_free_and_matches_torch_adamw():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("OK")
