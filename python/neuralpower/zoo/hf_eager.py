"""Hugging Face transformers as NeuSight measured them: PyTorch eager, fp32, every kernel a layer.

NeuSight (github.com/sitar-lab/NeuSight) timed these networks end to end on nine GPUs, built with Hugging Face
transformers from the configurations in ``neuralpower/data/hf_configs`` (copied from NeuSight, MIT license, see the
NOTICE there), in eval mode, on input ids of shape [batch, seq_len]:

- ``hf_bert_large``: ``AutoModelForSequenceClassification`` of ``bert_large.json`` (BERT-large with its pooler
  and a 2-label classifier);
- ``hf_gpt2_large``, ``hf_gpt3_xl``, ``hf_gpt3_27``: ``AutoModelForCausalLM`` (``GPT2LMHeadModel``) of
  ``gpt2_large.json``, ``gpt3_xl.json`` and ``gpt3_27.json``, the language-model head included;
- ``hf_opt_13``: ``AutoModelForCausalLM`` (``OPTForCausalLM``) of ``opt_13.json``.

Each layer is one kernel of the eager forward, in the order NeuSight's torch.fx traces show them: attention as its
eager parts (the two products as ``matmul``, the division by sqrt(head size), the mask as a ``where`` or an ``add``,
the softmax, the ``contiguous`` copy after the heads' transpose as a one-input ``concat``), GPT-2's ``gelu_new`` as
the eight element-wise kernels it runs (``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))``), element-wise
operations with a scalar or a smaller operand as ``broadcast`` ``add``/``mul`` (the second operand per channel, as
the importers write a scalar). Views, dropout (identity in eval mode) and Python arithmetic on sizes run no kernel
and are left out; so are the few tensor-creation kernels (``ones``, ``arange``, ``full``: microseconds in a network
of milliseconds), which have no layer type. Element-wise tensors are laid out as [batch x rows, last axis] and
attention's products per head (``heads``), as the fp32 GPU models of NeuSight's tables read them.

Two kinds of layer differ from the eager graph: the position-embedding lookup and OPT's mask and position
arithmetic run once for the whole batch (position ids of shape [1, seq_len]), while a layer here has the
network's batch, so they count the batch's rows (a few microseconds). The language-model head's weight is the
token embedding's (tied): the head is a ``linear`` without bias, and the architecture's ``params_shared`` keeps
the parameter count at what Hugging Face builds (``sum(p.numel() for p in model.parameters())``: 335,143,938,
774,030,080, 2,879,554,560, 2,651,553,280 and 1,315,758,080).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from . import register
from .builder import Builder, S

__all__ = ["NEUSIGHT_MODELS", "config", "register_all"]

# NeuSight's model names and the zoo's networks built from their configurations
NEUSIGHT_MODELS = {"bert_large": "hf_bert_large", "gpt2_large": "hf_gpt2_large", "gpt3_xl": "hf_gpt3_xl",
                   "gpt3_27": "hf_gpt3_27", "opt_13": "hf_opt_13"}


@cache
def config(name: str) -> dict[str, Any]:
    """The Hugging Face configuration NeuSight measured ``name`` (a key of :data:`NEUSIGHT_MODELS`) with."""
    text = resources.files("neuralpower").joinpath("data", "hf_configs", f"{name}.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


# -- element-wise kernels on [batch, *shape] ----------------------------------------------------------------------


def _ew(b: Builder, kind: str, shape: Sequence[int], name: str, **fields: int) -> None:
    """One element-wise kernel over a tensor of shape [batch, *shape], as rows x its last axis."""
    b._add(kind, name, in_channels=shape[-1], in_h=math.prod(shape[:-1]), **fields)


def _binary(b: Builder, kind: str, shape: Sequence[int], name: str) -> None:
    _ew(b, kind, shape, name, inputs=2)


def _scalar(b: Builder, kind: str, shape: Sequence[int], name: str) -> None:
    """An element-wise kernel of a tensor [batch, *shape] with a scalar or a smaller operand (a mask, a position
    embedding): ``broadcast``, the second operand per channel, as the importers write it."""
    _ew(b, kind, shape, name, inputs=2, broadcast=1)


def _copy(b: Builder, shape: Sequence[int], name: str) -> None:
    """``contiguous()`` of a transposed tensor (a copy)."""
    _ew(b, "concat", shape, name, inputs=1)


def _softmax(b: Builder, shape: Sequence[int], name: str) -> None:
    _ew(b, "softmax", shape, name, channels_first=0)


def _tied_head(b: Builder, s: S, vocab: int) -> S:
    """The language-model head, whose weight is the token embedding's: its parameters counted once."""
    b.share(vocab * s.features)
    return b.linear(s, vocab, bias=False, name="lm_head")


def _eager_attention(b: Builder, tokens: int, width: int, heads: int, where: str, *, mask: str,
                     scale_first: bool = False) -> None:
    """Attention as eager Hugging Face runs it, from the projected queries, keys and values to the heads merged
    again: ``mask`` is ``where`` (GPT-2's causal mask), ``add`` (BERT's padding mask) or ``add_max`` (OPT's mask
    added, then clamped at the dtype's minimum); ``scale_first``: the queries were scaled before the product
    (OPT), not the scores after it."""
    hd = width // heads
    q = S(tokens, hd)
    b.matmul(q, tokens, heads=heads, name=f"{where}.matmul")
    scores = (heads, tokens, tokens)
    if not scale_first:
        _scalar(b, "mul", scores, f"{where}.truediv")
    if mask == "where":
        _scalar(b, "add", scores, f"{where}.where")
    elif mask == "add":
        _scalar(b, "add", scores, f"{where}.add_mask")
    else:
        _scalar(b, "add", scores, f"{where}.add_mask")
        _scalar(b, "add", scores, f"{where}.max")
    _softmax(b, scores, f"{where}.softmax")
    b.matmul(S(tokens, tokens), hd, heads=heads, name=f"{where}.matmul_1")


# -- BERT for sequence classification ------------------------------------------------------------------------------


def _bert(cfg: dict[str, Any]) -> Callable[[Builder, S], S]:
    width, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    inner, vocab, positions = cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]

    def forward(b: Builder, ids: S) -> S:
        n = ids.tokens
        if n > positions:
            raise ValueError(f"BERT takes at most {positions} tokens, not {n}")
        # the extended attention mask: (1 - mask) * the dtype's minimum, on [batch, 1, 1, n]
        _scalar(b, "add", (1, 1, n), "extended_attention_mask.sub")
        _scalar(b, "mul", (1, 1, n), "extended_attention_mask.mul")
        b.embedding(n, vocab, width, name="bert.embeddings.word_embeddings")
        b.embedding(n, cfg["type_vocab_size"], width, name="bert.embeddings.token_type_embeddings")
        _binary(b, "add", (n, width), "bert.embeddings.add")
        b.embedding(n, positions, width, name="bert.embeddings.position_embeddings")
        _scalar(b, "add", (n, width), "bert.embeddings.add_1")  # the positions: one batch item's
        s = b.layernorm(S(n, width), name="bert.embeddings.LayerNorm")
        for i in range(layers):
            where = f"bert.encoder.layer.{i}"
            for proj in ("query", "key", "value"):
                b.linear(s, width, name=f"{where}.attention.self.{proj}")
            _eager_attention(b, n, width, heads, f"{where}.attention.self", mask="add")
            _copy(b, (n, heads, width // heads), f"{where}.attention.self.contiguous")
            y = b.linear(s, width, name=f"{where}.attention.output.dense")
            _binary(b, "add", (n, width), f"{where}.attention.output.add")
            s = b.layernorm(y, name=f"{where}.attention.output.LayerNorm")
            y = b.linear(s, inner, name=f"{where}.intermediate.dense")
            b.act(y, "gelu", name=f"{where}.intermediate.intermediate_act_fn")
            y = b.linear(y, width, name=f"{where}.output.dense")
            _binary(b, "add", (n, width), f"{where}.output.add")
            s = b.layernorm(y, name=f"{where}.output.LayerNorm")
        first = S(1, width)  # the first token of each sequence (a slice: no kernel)
        x = b.linear(first, width, name="bert.pooler.dense")
        _ew(b, "tanh", (width,), "bert.pooler.activation")
        return b.linear(x, cfg.get("num_labels", 2), name="classifier")

    return forward


# -- GPT-2 (GPT2LMHeadModel): GPT-2 Large and the GPT-3 sizes -----------------------------------------------------


def _gpt2(cfg: dict[str, Any]) -> Callable[[Builder, S], S]:
    width, heads, layers = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    vocab, positions = cfg["vocab_size"], cfg["n_positions"]
    inner = cfg.get("n_inner") or 4 * width
    if cfg.get("activation_function", "gelu_new") != "gelu_new":
        raise ValueError(f"only gelu_new GPT-2 configurations are built, not {cfg['activation_function']!r}")

    def forward(b: Builder, ids: S) -> S:
        n = ids.tokens
        if n > positions:
            raise ValueError(f"this GPT-2 takes at most {positions} tokens, not {n}")
        b.embedding(n, vocab, width, name="transformer.wte")
        b.embedding(n, positions, width, name="transformer.wpe")
        _scalar(b, "add", (n, width), "transformer.add")  # the positions: one batch item's
        s = S(n, width)
        for i in range(layers):
            where = f"transformer.h.{i}"
            y = b.layernorm(s, name=f"{where}.ln_1")
            b.linear(y, 3 * width, name=f"{where}.attn.c_attn")
            _eager_attention(b, n, width, heads, f"{where}.attn", mask="where")
            _copy(b, (n, heads, width // heads), f"{where}.attn.contiguous")
            b.linear(s, width, name=f"{where}.attn.c_proj")
            _binary(b, "add", (n, width), f"{where}.add")
            y = b.layernorm(s, name=f"{where}.ln_2")
            y = b.linear(y, inner, name=f"{where}.mlp.c_fc")
            # gelu_new: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3))), one kernel per operation
            act = f"{where}.mlp.act"
            _scalar(b, "mul", (n, inner), f"{act}.mul")  # 0.5 * x
            _scalar(b, "mul", (n, inner), f"{act}.pow")  # x ** 3
            _scalar(b, "mul", (n, inner), f"{act}.mul_1")  # 0.044715 * x ** 3
            _binary(b, "add", (n, inner), f"{act}.add")  # x + ...
            _scalar(b, "mul", (n, inner), f"{act}.mul_2")  # sqrt(2 / pi) * ...
            _ew(b, "tanh", (n, inner), f"{act}.tanh")
            _scalar(b, "add", (n, inner), f"{act}.add_1")  # 1 + ...
            _binary(b, "mul", (n, inner), f"{act}.mul_3")  # 0.5 * x * ...
            b.linear(y, width, name=f"{where}.mlp.c_proj")
            _binary(b, "add", (n, width), f"{where}.add_1")
        return _tied_head(b, b.layernorm(s, name="transformer.ln_f"), vocab)

    return forward


# -- OPT (OPTForCausalLM) ---------------------------------------------------------------------------------------------


def _opt(cfg: dict[str, Any]) -> Callable[[Builder, S], S]:
    width, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    vocab, positions, inner = cfg["vocab_size"], cfg["max_position_embeddings"], cfg["ffn_dim"]
    if cfg.get("word_embed_proj_dim", width) != width or not cfg.get("do_layer_norm_before", True):
        raise ValueError("only OPT configurations without an embedding projection, with layernorm before, are built")
    offset = 2  # OPT's learned positions start at 2

    def forward(b: Builder, ids: S) -> S:
        n = ids.tokens
        if n > positions:
            raise ValueError(f"OPT takes at most {positions} tokens, not {n}")
        b.embedding(n, vocab, width, name="model.decoder.embed_tokens")
        # the causal mask, expanded over the padding mask, and the positions (cumsum of the mask)
        _scalar(b, "add", (n,), "model.decoder.causal_mask.add")
        _scalar(b, "add", (1, n, n), "model.decoder.causal_mask.sub")
        _binary(b, "add", (1, n, n), "model.decoder.causal_mask.masked_fill")
        _binary(b, "add", (1, n, n), "model.decoder.causal_mask.masked_fill_1")
        _binary(b, "mul", (n,), "model.decoder.embed_positions.mul")
        _scalar(b, "add", (n,), "model.decoder.embed_positions.sub")
        _scalar(b, "add", (n,), "model.decoder.embed_positions.add")
        b.embedding(n, positions + offset, width, name="model.decoder.embed_positions")
        _binary(b, "add", (n, width), "model.decoder.add")
        s = S(n, width)
        hd = width // heads
        for i in range(layers):
            where = f"model.decoder.layers.{i}"
            y = b.layernorm(s, name=f"{where}.self_attn_layer_norm")
            b.linear(y, width, name=f"{where}.self_attn.q_proj")
            _scalar(b, "mul", (n, width), f"{where}.self_attn.scaling")
            b.linear(y, width, name=f"{where}.self_attn.k_proj")
            _copy(b, (heads, n, hd), f"{where}.self_attn.k.contiguous")
            b.linear(y, width, name=f"{where}.self_attn.v_proj")
            _copy(b, (heads, n, hd), f"{where}.self_attn.v.contiguous")
            _copy(b, (heads, n, hd), f"{where}.self_attn.q.contiguous")
            _eager_attention(b, n, width, heads, f"{where}.self_attn", mask="add_max", scale_first=True)
            _copy(b, (n, width), f"{where}.self_attn.reshape")
            b.linear(s, width, name=f"{where}.self_attn.out_proj")
            _binary(b, "add", (n, width), f"{where}.add")
            y = b.layernorm(s, name=f"{where}.final_layer_norm")
            y = b.linear(y, inner, name=f"{where}.fc1")
            b.act(y, "relu", name=f"{where}.activation_fn")
            b.linear(y, width, name=f"{where}.fc2")
            _binary(b, "add", (n, width), f"{where}.add_1")
        return _tied_head(b, b.layernorm(s, name="model.decoder.final_layer_norm"), vocab)

    return forward


_HF = "Hugging Face transformers, {} of NeuSight's {}.json (eval mode, eager attention)"
_BUILDERS: dict[str, tuple[Callable[[dict[str, Any]], Callable[[Builder, S], S]], str, str]] = {
    "bert_large": (_bert, "AutoModelForSequenceClassification", "BERT-large for sequence classification"),
    "gpt2_large": (_gpt2, "AutoModelForCausalLM", "GPT-2 Large"),
    "gpt3_xl": (_gpt2, "AutoModelForCausalLM", "GPT-3 XL as NeuSight configures it (GPT-2 architecture, width 3072, "
                "24 layers: 2.88B parameters, not the paper's 1.3B)"),
    "gpt3_27": (_gpt2, "AutoModelForCausalLM", "GPT-3 2.7B (GPT-2 architecture, width 2560, 32 layers)"),
    "opt_13": (_opt, "AutoModelForCausalLM", "OPT-1.3B"),
}
def register_all() -> None:
    """Add the networks to the zoo (after the others: the zoo's order)."""
    for model, (make, auto, what) in _BUILDERS.items():
        cfg = config(model)
        register(
            NEUSIGHT_MODELS[model],
            description=f"{what} as PyTorch eager runs it (NeuSight's measured network; every kernel a layer), with "
            f"{'its classifier' if model.startswith('bert') else 'the language-model head'}",
            source=_HF.format(auto, model),
            seq_len=cfg.get("max_position_embeddings") or cfg.get("n_positions"),
        )(make(cfg))
