"""AdamW's fused kernel (default where torch ships it) steps like the foreach kernel, and
checkpoints move between the two (the step count changes device as torch's does)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from training.runtime.optim import AdamW, _fusable, build_optimizer, param_groups


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))


def _steps(net, opt, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad()
        net(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()


@pytest.mark.skipif(not _fusable(torch.zeros(1)), reason="this torch has no CPU fused AdamW")
def test_fused_is_the_cpu_default_and_matches_foreach_and_loop():
    nets = {k: _net() for k in ("default", "fused", "foreach", "loop")}
    kw = {"default": {}, "fused": {"fused": True}, "foreach": {"foreach": True, "fused": False},
          "loop": {"foreach": False, "fused": False}}
    opts = {k: AdamW(param_groups(n, 0.05), lr=1e-2, betas=(0.9, 0.95), **kw[k])
            for k, n in nets.items()}
    for k in nets:
        _steps(nets[k], opts[k])
    ref = list(nets["foreach"].parameters())
    for k in ("default", "fused", "loop"):
        diff = max((a - b).abs().max().item()
                   for a, b in zip(nets[k].parameters(), ref, strict=True))
        assert diff < 1e-6, (k, diff)
    assert nets["fused"] is not nets["foreach"]
    moved = max((a - b).abs().max().item()
                for a, b in zip(nets["fused"].parameters(), _net().parameters(), strict=True))
    assert moved > 1e-3  # the steps did something


@pytest.mark.skipif(not _fusable(torch.zeros(1)), reason="this torch has no CPU fused AdamW")
def test_checkpoints_cross_between_fused_and_foreach():
    a, b = _net(), _net()
    fused = build_optimizer(a, 1e-2)
    _steps(a, fused, 3)
    foreach_net = copy.deepcopy(a)
    foreach = AdamW(param_groups(foreach_net, 0.05), lr=1e-2, betas=(0.9, 0.95), fused=False)
    foreach.load_state_dict(copy.deepcopy(fused.state_dict()))  # as if saved
    for g in foreach.param_groups:  # the loaded groups carry the writer's kernel choice
        g["fused"] = False
    _steps(a, fused, 3, seed=2)
    _steps(foreach_net, foreach, 3, seed=2)
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(),
                                                          foreach_net.parameters(), strict=True))
    assert diff < 1e-6
    # and back: a foreach checkpoint resumes under the fused kernel
    back = build_optimizer(b, 1e-2)
    b.load_state_dict(foreach_net.state_dict())
    back.load_state_dict(copy.deepcopy(foreach.state_dict()))
    _steps(b, back, 2, seed=3)
    _steps(foreach_net, foreach, 2, seed=3)
    assert max((p - q).abs().max().item()
               for p, q in zip(b.parameters(), foreach_net.parameters(), strict=True)) < 1e-6


def test_explicit_fused_on_unsupported_parameters_is_refused():
    p = nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    with pytest.raises(RuntimeError, match="fused AdamW does not support"):
        AdamW([p], fused=True)
