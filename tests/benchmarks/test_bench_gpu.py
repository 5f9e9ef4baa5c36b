"""The GPU benchmark script runs on a machine without a GPU and says so (CI has none)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would run")
def test_bench_gpu_without_a_gpu_says_so_and_exits_cleanly():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], env=env,
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no CUDA GPU found" in out.stdout
    assert "Traceback" not in out.stderr


def test_bench_gpu_help_and_peak_table():
    from benchmarks.bench_gpu import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Some Unknown GPU") is None
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and "torch.compile" in out.stdout


def test_bench_gpu_code_paths_run_on_cpu():
    """Every measurement of the script (engine slices, MAE bf16 steps, FLOP count) runs once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"),
                          "--cpu-smoke"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    assert line, out.stdout
    import json
    rec = json.loads(line[0])
    assert rec["slice_latency_s"] > 0 and rec["ct2_s"] > 0 and rec["images_per_s"] > 0
    assert rec["tflop_per_step"] > 0
