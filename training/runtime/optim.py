"""AdamW with the usual no-decay groups, and the per-iteration warm-up + cosine schedule.

Why our own AdamW step: every method of ``torch.optim.Optimizer`` (the constructor's
``add_param_group``, ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``) is wrapped
by ``torch._disable_dynamo``, which imports ``torch._dynamo`` on first call, and that imports
triton. In a process that has already loaded Mesa's OpenGL (napari under Xvfb, VMs, remote
desktops, AMD), triton's LLVM clashes with Mesa's and the process segfaults. ``AdamW`` below
is a ``torch.optim.Optimizer`` (schedulers and ``GradScaler`` accept it) whose methods call
the undecorated originals (``__wrapped__``) and whose step is torch's AdamW arithmetic
(decoupled weight decay, bias-corrected moments; ``foreach`` kernels, as torch's default),
with the same state layout (``step``, ``exp_avg``, ``exp_avg_sq``): checkpoints written by
either load into the other. It never imports ``torch._dynamo``.

Kernels: ``fused`` (torch's single fused AdamW kernel, ``torch._fused_adamw_``, called
directly; it loads no compiler) wherever it supports the parameters' device and dtype (CUDA,
and CPU where torch ships it), else ``foreach``. Measured by ``benchmarks.bench_optim``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_Optimizer = torch.optim.Optimizer


def _undecorated(name: str):
    fn = getattr(_Optimizer, name)
    return getattr(fn, "__wrapped__", fn)


class AdamW(_Optimizer):
    """``torch.optim.AdamW`` (amsgrad off, not differentiable) without ``torch._dynamo``."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, foreach: bool | None = None,
                 fused: bool | None = None):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamW setting: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, foreach=foreach,
                                      differentiable=False, maximize=False, amsgrad=False,
                                      fused=fused))
        if fused:  # explicit request: refuse what the kernel cannot do, as torch does
            bad = [p for g in self.param_groups for p in g["params"] if not _fusable(p)]
            if bad:
                raise RuntimeError(f"fused AdamW does not support {bad[0].device.type} "
                                   f"{bad[0].dtype} parameters")

    add_param_group = _undecorated("add_param_group")
    zero_grad = _undecorated("zero_grad")
    state_dict = _undecorated("state_dict")
    load_state_dict = _undecorated("load_state_dict")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, avgs, sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                st = self.state[p]
                if not st:  # fused kernels read the step count on the parameter's device
                    st["step"] = torch.tensor(0.0, device=p.device if _use_fused(group, p)
                                              else None)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif _use_fused(group, p) and st["step"].device != p.device:
                    # restored from an unfused optimizer's checkpoint: step moves to the device
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
                params.append(p)
                grads.append(p.grad)
                avgs.append(st["exp_avg"])
                sqs.append(st["exp_avg_sq"])
                steps.append(st["step"])
            if params:
                _adamw(params, grads, avgs, sqs, steps, group)
        return loss


def _fusable(p: torch.Tensor) -> bool:
    """Does ``torch._fused_adamw_`` run on this parameter (device and dtype)?"""
    if not hasattr(torch, "_fused_adamw_") or not p.is_floating_point():
        return False
    if p.device.type == "cuda":
        return True
    if p.device.type == "cpu":
        return _cpu_fused_available()
    return p.device.type == "mps" and p.dtype in (torch.float32, torch.float16, torch.bfloat16)


_CPU_FUSED: list[bool] = []


def _cpu_fused_available() -> bool:
    """Probe the CPU kernel once (older torch builds raise NotImplementedError)."""
    if not _CPU_FUSED:
        try:
            t = [torch.zeros(1)]
            torch._fused_adamw_(t, [torch.zeros(1)], [torch.zeros(1)], [torch.zeros(1)], [],
                                [torch.tensor(1.0)], lr=0.0, beta1=0.9, beta2=0.9,
                                weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
            _CPU_FUSED.append(True)
        except (RuntimeError, NotImplementedError):
            _CPU_FUSED.append(False)
    return _CPU_FUSED[0]


def _use_fused(group: dict, p: torch.Tensor) -> bool:
    fused = group.get("fused")
    return _fusable(p) if fused is None else bool(fused)


def _adamw(params, grads, avgs, sqs, steps, group) -> None:
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], \
        group["weight_decay"]
    if all(_use_fused(group, p) for p in params):
        _adamw_fused(params, grads, avgs, sqs, steps, lr, beta1, beta2, eps, wd)
        return
    foreach = group.get("foreach")
    if foreach is None:
        foreach = all(p.device.type in ("cuda", "cpu", "mps") for p in params)
    for s in steps:
        s += 1
    if foreach:  # one kernel per operation over the whole group, by device and dtype
        buckets: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            buckets.setdefault((p.device, p.dtype), []).append(i)
        for idx in buckets.values():
            ps, gs = [params[i] for i in idx], [grads[i] for i in idx]
            ms, vs = [avgs[i] for i in idx], [sqs[i] for i in idx]
            n = float(steps[idx[0]].item()) if all(
                steps[i].item() == steps[idx[0]].item() for i in idx) else None
            if n is None:  # groups restored from mixed checkpoints: per tensor
                for i in idx:
                    _one(params[i], grads[i], avgs[i], sqs[i], float(steps[i].item()), lr,
                         beta1, beta2, eps, wd)
                continue
            if wd:
                torch._foreach_mul_(ps, 1 - lr * wd)
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
            bc1, bc2 = 1 - beta1 ** n, 1 - beta2 ** n
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(ps, ms, denom, -lr / bc1)
    else:
        for p, g, m, v, s in zip(params, grads, avgs, sqs, steps, strict=True):
            _one(p, g, m, v, float(s.item()), lr, beta1, beta2, eps, wd)


def _adamw_fused(params, grads, avgs, sqs, steps, lr, beta1, beta2, eps, wd) -> None:
    """torch's fused AdamW kernel, one launch per (device, dtype) bucket; steps per tensor."""
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    for idx in buckets.values():
        st = [steps[i] for i in idx]
        torch._foreach_add_(st, 1)
        torch._fused_adamw_([params[i] for i in idx], [grads[i] for i in idx],
                            [avgs[i] for i in idx], [sqs[i] for i in idx], [], st,
                            lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
                            amsgrad=False, maximize=False)


def _one(p, g, m, v, n, lr, beta1, beta2, eps, wd) -> None:
    if wd:
        p.mul_(1 - lr * wd)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bc1, bc2 = 1 - beta1 ** n, 1 - beta2 ** n
    denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / bc1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and norms / biases / tables / tokens without decay."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if n in skip or p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.95)) -> AdamW:
    return AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def warmup_cosine(step: float, total_steps: float, warmup_steps: float, base_lr: float,
                  min_lr: float = 0.0) -> float:
    """Linear warm-up from 0, then a half-cycle cosine down to ``min_lr``."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1e-12)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1e-12)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """``warmup_cosine`` as a per-step scheduler (its state saves and restores with the rest)."""

    def __init__(self, optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        super().__init__(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, 1.0,
                                                            min_lr_ratio))
