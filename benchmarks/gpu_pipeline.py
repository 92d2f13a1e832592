"""Every stage of the pipeline, timed on a random model with Llama-3.1-8B's exact architecture.

No weights are needed: the model is built from its config (hidden 4096, 32 layers, MLP 14336,
32 heads, 8 KV heads, vocab 128256, RoPE θ 500000) and randomly initialised on the device. The
passages are the offline wiki-sample corpus with a word-level tokenizer. Each stage runs through
the pipeline's own code (``resdyn.compute.pipeline``) into a throw-away run directory.

Reported: seconds per stage, the extrapolation to the paper's scale (1,000 samples × 32 layers),
and for the Jacobian products (taken by the jacobians stage and again by sample_stats) the
achieved TFLOP/s and the fraction of the device's FP32 peak (IEEE float32: TF32 stays off, since it
would change the numbers). The per-sample statistics (on a GPU a float64 Gram matrix and eigvalsh,
METHODS §2) are timed apart.

Without a CUDA device the script runs a scaled-down config (d = 256, 4 layers) on the CPU. That
exercises every code path the GPU run takes but says nothing about GPU speed: the GPU figures stay
open until someone runs this on one.

Usage: python benchmarks/gpu_pipeline.py [--samples 64] [--layers 32] [--stages ...] [--peak-tflops X]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

# FP32 (non-tensor-core) dense peaks in TFLOP/s from the vendors' datasheets, by device name.
FP32_PEAK_TFLOPS = [
    ("H100 PCIe", 51.2), ("H100 NVL", 60.0), ("H100", 66.9), ("H200", 66.9), ("GH200", 66.9),
    ("A100", 19.5), ("L40S", 91.6), ("L4", 30.3), ("A10", 31.2), ("V100", 15.7),
]

LLAMA31_8B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072,
                  rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
CPU_SCALED = dict(LLAMA31_8B, hidden_size=256, num_hidden_layers=4, intermediate_size=896, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=8192)
PAPER_N, PAPER_L = 1000, 32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p for key, p in FP32_PEAK_TFLOPS if key in name), None)


def word_tokenizer(texts: list[str], vocab_size: int):
    """A word-level fast tokenizer over ``texts`` (ids < vocab_size; the rest map to [UNK])."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for t in texts for w in t.split()})[: vocab_size - 3]
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")


def build_bundle(arch: dict, texts: list[str], device: torch.device, seed: int = 0):
    import transformers as tf

    from resdyn.compute.adapters import adapter_for
    from resdyn.compute.models import attention_for, prepare

    config = tf.LlamaConfig(**arch)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: an 8B model in float32 is 32 GB
        model = tf.LlamaForCausalLM._from_config(config, attn_implementation=attention_for(torch.float32),
                                                 dtype=torch.float32)
    return prepare(model, word_tokenizer(texts, arch["vocab_size"]), adapter_for(config), device, torch.float32)


class StageTimer:
    """Wall time of the per-sample Jacobian products and of their statistics (the sample_stats
    stage), through the names it looks up in ``resdyn.compute.block_jacobians``. The jacobians
    stage takes the Llama mean from the closed-form sum over samples, without per-sample products."""

    def __init__(self, device: torch.device):
        self.device, self.t_jac, self.t_stats, self.n_jac = device, 0.0, 0.0, 0

    @contextlib.contextmanager
    def patched(self):
        from resdyn.compute import block_jacobians

        real_iso, real_stats = block_jacobians.isolated_jacobians, block_jacobians.gram_stats

        def iso(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            out = real_iso(*args, **kwargs)
            sync(self.device)
            self.t_jac += time.perf_counter() - t0
            self.n_jac += len(out)
            return out

        def stats(jac):
            sync(self.device)
            t0 = time.perf_counter()
            out = real_stats(jac)
            sync(self.device)
            self.t_stats += time.perf_counter() - t0
            return out

        block_jacobians.isolated_jacobians, block_jacobians.gram_stats = iso, stats
        try:
            yield self
        finally:
            block_jacobians.isolated_jacobians, block_jacobians.gram_stats = real_iso, real_stats


def jacobian_flops(d: int, ff: int, d_kv: int, n_jac: int, batch: int) -> float:
    """Matmul FLOPs of the Llama closed form (adapters/llama.py) for ``n_jac`` Jacobians in batches
    of ``batch``. Per sample: W_down·inner (2·d·ff·d) and M·J_attn (2·d³), the dominant terms, plus
    the one-token forward (v_proj 2·d·d_kv, o_proj 2·d², gate and up 4·d·ff) and the two RMSNorm
    rank-one products (4·d²). Per batch: C = W_o·W_v (2·d³). d_kv = KV heads × head dim.
    Equal to torch's FlopCounterMode count (tests/compute/test_gpu_path.py)."""
    n_batches = -(-n_jac // batch)
    per_sample = 2.0 * d * ff * d + 2.0 * d**3 + 2.0 * d * d_kv + 2.0 * d * d + 4.0 * d * ff + 4.0 * d * d
    return n_jac * per_sample + n_batches * 2.0 * d**3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=None, help="N (default 64 on CUDA, 8 on CPU)")
    ap.add_argument("--layers", type=int, default=None, help="override the number of layers (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--stages", default="activations,jacobians,spectra,sample_stats",
                    help="comma-separated stages, or 'all' (default: the GPU-bound ones and spectra)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device FP32 peak, if not in the table")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    from resdyn.compute import pipeline
    from resdyn.compute.context import RunContext
    from resdyn.compute.corpus import load_corpus
    from resdyn.compute.models import resolve_device
    from resdyn.compute.stages import all_stages
    from resdyn.config import RunConfig
    from resdyn.core.store import RunStore

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    arch = dict(LLAMA31_8B if on_gpu else CPU_SCALED)
    if args.layers:
        arch["num_hidden_layers"] = args.layers
    n = args.samples or (64 if on_gpu else 8)
    d, ff, n_layers = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    stages = all_stages() if args.stages == "all" else pipeline.select_stages(args.stages, all_stages())

    texts = load_corpus("wiki-sample", n)
    t0 = time.perf_counter()
    bundle = build_bundle(arch, texts, device)
    sync(device)
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="resdyn-bench-") as tmp:
        cfg = RunConfig(model="llama-3.1-8b-config", init="random", corpus="wiki-sample", samples=n,
                        batch_size=args.batch_size, device=str(device), runs_dir=Path(tmp), run_id="bench")
        store = RunStore(cfg.run_dir)
        ctx = RunContext(cfg, store, quiet=True, _bundle=bundle, _texts=texts)
        with store.lock():
            pipeline.init_manifest(ctx, stages)
            timer = StageTimer(device)
            seconds = {}
            for stage in stages:
                if on_gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                t0 = time.perf_counter()
                with timer.patched():
                    stage.fn(ctx)
                sync(device)
                seconds[stage.name] = time.perf_counter() - t0
                store.mark_stage_done(stage.name, seconds[stage.name], [s.name for s in stages], stage.outputs)
                if on_gpu:
                    print(f"  {stage.name}: peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")

    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; Llama-3.1-8B architecture{'' if on_gpu else ' SCALED DOWN'}: d={d}, L={n_layers}, "
          f"ff={ff}, heads {arch['num_attention_heads']}/{arch['num_key_value_heads']}, vocab {arch['vocab_size']}; "
          f"N={n}, batch {args.batch_size}, float32 (TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
    print(f"model build (random init on {device.type}): {t_build:.1f} s")
    # Activations and Jacobians scale with N and L; the per-layer numpy stages with L (at fixed d).
    paper = d == LLAMA31_8B["hidden_size"]
    per_jacobian = PAPER_N / n * PAPER_L / n_layers
    scale = {"activations": PAPER_N / n, "jacobians": per_jacobian, "sample_stats": per_jacobian}
    total_paper = 0.0
    print(f"{'stage':<20}{'seconds':>10}" + (f"{'at N=1000, L=32':>20}" if paper else ""))
    for stage, sec in seconds.items():
        at_paper = sec * scale.get(stage, PAPER_L / n_layers)
        total_paper += at_paper
        print(f"{stage:<20}{sec:>10.2f}" + (f"{at_paper:>20.1f}" if paper else ""))
    print(f"{'total':<20}{sum(seconds.values()):>10.2f}"
          + (f"{total_paper:>20.1f}   (goal on one H100: <= 3600 s)" if paper else ""))
    figures = {"device": name, "d": d, "n_layers": n_layers, "samples": n, "seconds": seconds,
               "seconds_at_paper_scale": total_paper if paper else None}
    if timer.n_jac:
        d_kv = arch["num_key_value_heads"] * (d // arch["num_attention_heads"])
        flops = jacobian_flops(d, ff, d_kv, timer.n_jac, args.batch_size)
        tflops = flops / timer.t_jac / 1e12
        peak = peak_tflops(device, args.peak_tflops)
        print(f"sample_stats: {timer.n_jac} Jacobians, products {timer.t_jac:.2f} s = {tflops:.2f} TFLOP/s"
              + (f" = {100 * tflops / peak:.0f} % of FP32 peak {peak} TFLOP/s" if peak else "")
              + f"; per-sample statistics (float64 Gram + eigvalsh) {timer.t_stats:.2f} s")
        figures.update(jacobian_tflops=tflops, peak_tflops=peak, stats_seconds=timer.t_stats,
                       jacobian_seconds=timer.t_jac)
    if not on_gpu:
        print("GPU figures are open: no CUDA device here. These CPU timings of a scaled-down config only show "
              "that every stage's code path runs; rerun on a GPU for the H100 figures.")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
