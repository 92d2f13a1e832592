"""The GPU path's pieces that can be checked without a GPU: memory-bounded row chunks, chunking
that leaves the Jacobians unchanged, and the FLOP count behind the benchmark's TFLOP/s."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resdyn.compute import block_jacobians
from resdyn.compute.blocks import isolated_calls, isolated_fn
from tests.compute.tiny import tiny_bundle

ROOT = Path(__file__).resolve().parents[2]


def _fake_cuda_bundle(d=4096, ff=14336):
    return SimpleNamespace(d_model=d, device=torch.device("cuda"), dtype=torch.float32,
                           config=SimpleNamespace(intermediate_size=ff))


@pytest.mark.parametrize("free_gib, expected", [(80, None), (1, 128), (0.01, 1)])
def test_row_chunk_on_cuda_fits_half_the_free_memory(monkeypatch, free_gib, expected):
    free = int(free_gib * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    chunk = block_jacobians.auto_row_chunk(_fake_cuda_bundle(), batch=8)
    assert chunk == expected
    per_row = 8 * (8 * 4096 + 4 * 14336) * 4
    if chunk is not None and chunk > 1:
        assert chunk * per_row <= free / 2 < 2 * chunk * per_row  # the largest power of two that fits


def test_row_chunk_on_cpu_is_the_default():
    bundle = SimpleNamespace(d_model=4096, device=torch.device("cpu"), dtype=torch.float32, config=None)
    assert block_jacobians.auto_row_chunk(bundle, batch=8) == block_jacobians.default_row_chunk(4096) == 512


def test_chunked_jacobians_equal_unchunked_to_float32_rounding():
    """Chunking changes the shapes of the batched products, so the last bit may differ (measured:
    up to 4.8e-7 here), never more: the row chunk is a memory knob, not a numerical one."""
    bundle = tiny_bundle("gpt2", dtype=torch.float32)  # the autodiff path (no closed form)
    fn = isolated_fn(isolated_calls(bundle)[1])
    h = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    whole = block_jacobians.batched_jacobian(fn, h, None)
    for chunk in (1, 4, 7):
        torch.testing.assert_close(block_jacobians.batched_jacobian(fn, h, chunk), whole, rtol=0,
                                   atol=8 * torch.finfo(torch.float32).eps * whole.abs().max().item())


def test_benchmark_flop_count_equals_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    spec = importlib.util.spec_from_file_location("gpu_pipeline", ROOT / "benchmarks" / "gpu_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bundle = tiny_bundle("llama", dtype=torch.float32)  # d 32, ff 64, 2 KV heads of dim 8
    call = isolated_calls(bundle)[0]
    h = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        bundle.adapter.isolated_jacobian(call.block, h)
    assert counter.get_total_flops() == bench.jacobian_flops(d=32, ff=64, d_kv=16, n_jac=5, batch=5)
