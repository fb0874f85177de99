"""Write examples/llm-candidates.csv.gz: decoder-only language-model candidates (Llama-style), in bf16.

The space is the kind an LLM architecture search explores: depth, width, head size, key/value heads (grouped-query
attention), the feed-forward width and the vocabulary. Each candidate is one prefill of ``--seq-len`` tokens at
``--batch`` sequences (the logits of every token), as the layers a serving engine runs: a token embedding, per
decoder layer a norm, the fused q/k/v projection, causal attention, the output projection, a residual add, a norm,
the fused gate/up projection, SiLU, the gating multiply, the down projection and a residual add; a final norm and
the LM head. Candidates are drawn at random with a fixed seed, so the file is reproducible:

    python examples/make_llm_candidates.py [COUNT] [OUT] [--batch B] [--seq-len N] [--dtype D]

There is no `error` column: these candidates were never trained.
"""

from __future__ import annotations

import argparse
import random

import neuralpower as npw
from neuralpower.zoo.builder import Builder, S, T


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(x / multiple + 0.5) * multiple)


def decoder(rng: random.Random, index: int, batch: int, seq_len: int, dtype: str) -> npw.Architecture:
    head_dim = rng.choice([64, 128])
    width = rng.choice([1024, 1536, 2048, 2560, 3072, 4096])
    heads = width // head_dim
    kv_heads = rng.choice([h for h in (1, 2, 4, 8, heads) if heads % h == 0])
    layers = rng.randint(8, 32)
    ffn = _round(width * rng.choice([2.75, 3.5, 4.0]), 256)
    vocab = rng.choice([32000, 50304, 128256])
    b = Builder(batch=batch, dtype=dtype)
    s = b.embedding(seq_len, vocab, width, name="embed_tokens")
    for i in range(layers):
        at = f"layers.{i}"
        y = b.layernorm(s, name=f"{at}.input_norm")
        b.linear(y, (heads + 2 * kv_heads) * head_dim, bias=False, name=f"{at}.qkv_proj")
        y = b.attention(S(seq_len, width), heads, causal=True, kv_heads=kv_heads, name=f"{at}.attention")
        y = b.linear(y, width, bias=False, name=f"{at}.o_proj")
        s = b.add(s, y, name=f"{at}.add1")
        y = b.layernorm(s, name=f"{at}.post_norm")
        gate_up = b.linear(y, 2 * ffn, bias=False, name=f"{at}.gate_up_proj")
        gate = b.act(S(gate_up.tokens, ffn), "silu", name=f"{at}.act")
        b.mul(T(ffn, seq_len), T(ffn, seq_len), name=f"{at}.gate_mul")  # element-wise, as add writes tokens
        y = gate
        y = b.linear(y, width, bias=False, name=f"{at}.down_proj")
        s = b.add(s, y, name=f"{at}.add2")
    s = b.layernorm(s, name="norm")
    b.linear(s, vocab, bias=False, name="lm_head")
    return b.build(f"llm-{index:05d}", family="decoder", depth=layers, width=width, query_heads=heads,
                   key_value_heads=kv_heads, ffn=ffn, vocabulary=vocab)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=1000)
    parser.add_argument("out", nargs="?", default="examples/llm-candidates.csv.gz")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--dtype", default="bf16")
    args = parser.parse_args(argv)
    rng = random.Random(2026)
    archs = [decoder(rng, i, args.batch, args.seq_len, args.dtype) for i in range(args.count)]
    npw.write_architectures(archs, args.out)
    print(f"wrote {args.out}: {args.count} architectures, {sum(len(a) for a in archs)} layers")


if __name__ == "__main__":
    main()
