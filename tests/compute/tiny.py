"""Tiny random configs of every supported architecture, for exactness tests (METHODS §10)."""

from __future__ import annotations

import torch
import transformers as tf

from resdyn.compute.adapters import adapter_for
from resdyn.compute.models import attention_for, prepare

D = 32

CONFIGS = {
    "llama": lambda: tf.LlamaConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=64, max_position_embeddings=64),
    "olmo2": lambda: tf.Olmo2Config(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=64, max_position_embeddings=64),
    "gemma3": lambda: tf.Gemma3TextConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                          num_key_value_heads=1, head_dim=8, vocab_size=64, max_position_embeddings=64,
                                          sliding_window=4),
    "gpt2": lambda: tf.GPT2Config(n_embd=D, n_layer=3, n_head=4, vocab_size=64, n_positions=64),
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                         vocab_size=64, max_position_embeddings=64, use_parallel_residual=True),
    "phi3": lambda: tf.Phi3Config(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2, partial_rotary_factor=0.5),
    # Mixture of experts: 4 experts, top 2, so that samples route differently.
    "mixtral": lambda: tf.MixtralConfig(hidden_size=D, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=64, max_position_embeddings=64,
                                        num_local_experts=4, num_experts_per_tok=2),
    # Shared expert with a sigmoid gate, weights not renormalised, and a dense MLP in layer 2.
    "qwen2_moe": lambda: tf.Qwen2MoeConfig(hidden_size=D, intermediate_size=64, moe_intermediate_size=32,
                                           shared_expert_intermediate_size=48, num_hidden_layers=3,
                                           num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                           max_position_embeddings=64, num_experts=4, num_experts_per_tok=2,
                                           norm_topk_prob=False, mlp_only_layers=[2]),
    "qwen3_moe": lambda: tf.Qwen3MoeConfig(hidden_size=D, intermediate_size=64, moe_intermediate_size=32,
                                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                           head_dim=8, vocab_size=64, max_position_embeddings=64, num_experts=4,
                                           num_experts_per_tok=2, norm_topk_prob=True),
    "olmoe": lambda: tf.OlmoeConfig(hidden_size=D, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, num_experts=4,
                                    num_experts_per_tok=2, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "bert": lambda: tf.BertConfig(hidden_size=D, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  vocab_size=64, max_position_embeddings=64),
}
ARCHS = list(CONFIGS)


class StubTokenizer:
    bos_token_id = 1
    cls_token_id = 1
    pad_token_id = 0
    eos_token_id = 2


def tiny_bundle(arch: str, dtype=torch.float64, seed: int = 0):
    """A tiny random model of ``arch`` with every weight (norm gains and biases too) perturbed,
    so identities are checked away from the special values 1 and 0 that defaults give."""
    config = CONFIGS[arch]()
    adapter = adapter_for(config)
    torch.manual_seed(seed)
    auto = tf.AutoModelForCausalLM if adapter.causal else tf.AutoModel
    model = auto.from_config(config, attn_implementation=attention_for(dtype))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return prepare(model, StubTokenizer(), adapter, torch.device("cpu"), dtype)
