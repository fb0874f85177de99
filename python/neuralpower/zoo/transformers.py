"""The zoo's transformers and ConvNeXt, each written the way its reference implementation's eval-mode
``forward`` runs.

- ``vit_b_16``, ``vit_b_32`` and ``convnext_tiny`` follow torchvision 0.29.1 (``torchvision.models``).
  ViT's ``nn.MultiheadAttention`` is three layers, as its inference path runs it: the fused input
  projection (one linear to 3 x width), scaled dot-product attention, the output projection. Its class
  token and position embedding are parameters used as operands (of ``torch.cat`` and ``+``), and
  ConvNeXt's layer scale is one (a broadcast ``mul``): they are counted in the architecture's
  ``params_outside_layers``. ConvNeXt's block runs its layernorm and linear layers channels-last, on the
  H x W positions as tokens; its stem, downsampling and classifier use the channels-first ``LayerNorm2d``.
- ``bert_base``, ``bert_large`` (the original BERT release's sizes, as Hugging Face's ``BertModel`` runs
  them with its pooler: word, position and token-type embeddings, separate query, key and value
  projections, scaled dot-product attention, exact GELU, post-layernorm residuals) and ``gpt2`` (the
  124M GPT-2 release, as ``GPT2LMHeadModel`` runs a prefill: fused query-key-value projection, causal
  attention, the tanh GELU, pre-layernorm residuals, and the language-model head, whose weight is the
  token embedding's (tied), a ``matmul`` with that shared matrix computing logits for every token).
  Their input is a sequence of token ids (``--seq-len``, default 128 for BERT and 1024, GPT-2's context,
  for GPT-2).

Parameter counts equal the published ones (torchvision's table; 109,482,240 and 335,141,888 for BERT base
and large with the pooler, 124,439,808 for GPT-2), and MACs follow torchvision's convention (convolutions,
linear layers and both products of attention): 17.56, 4.41 and 4.46 GMACs for ViT-B/16, ViT-B/32 and
ConvNeXt-T at 224 x 224. Dropout and stochastic depth (identity at inference) and views (reshapes,
permutes, head splits) do no work and are left out.
"""

from __future__ import annotations

from collections.abc import Callable

from . import register
from .builder import Builder, S, T

__all__ = ["encoder_layer", "patch_embedding", "vit_head"]

_TV = "torchvision 0.29.1, torchvision.models.{} (eval mode)"


# -- Vision Transformer ---------------------------------------------------------------------------------


def _mha(b: Builder, x: S, heads: int, name: str, *, causal: bool = False) -> S:
    """``nn.MultiheadAttention`` (self-attention, batch first) as its fast path runs it."""
    qkv = b.linear(x, 3 * x.features, name=f"{name}.in_proj")
    y = b.attention(S(qkv.tokens, x.features), heads, causal=causal, name=f"{name}.attention")
    return b.linear(y, x.features, name=f"{name}.out_proj")


def patch_embedding(b: Builder, x: T, width: int, patch: int) -> S:
    """ViT's input (torchvision's ``_process_input`` and the encoder's input): the ``patch`` x ``patch``
    stride-``patch`` convolution to ``width`` channels, the class token prepended (a concat), the position
    embedding added. The class token and the position embedding are parameters outside layers."""
    if x.h % patch or x.w % patch:
        raise ValueError(f"image size {x.h} x {x.w} is not a multiple of the patch size {patch}")
    x = b.conv(x, width, patch, patch, bias=True, name="conv_proj")
    tokens = b.tokens_of(x)
    b.parameter(width)  # the class token
    s = b.concat_tokens(S(1, width), tokens, name="cat")
    b.parameter(s.tokens * width)  # the position embedding
    return b.add(s, s, name="encoder.add")


def encoder_layer(b: Builder, x: S, heads: int, mlp: int, name: str = "") -> S:
    """torchvision's ``EncoderBlock``: layernorm, multi-head self-attention (fused input projection, scaled
    dot-product attention, output projection), residual add; layernorm, the MLP (linear to ``mlp`` features,
    exact GELU, linear back), residual add. Layer names are prefixed by ``name`` and a dot when given."""
    at = f"{name}." if name else ""
    y = b.layernorm(x, name=f"{at}ln_1")
    y = _mha(b, y, heads, f"{at}self_attention")
    s = b.add(y, x, name=f"{at}add1")
    y = b.layernorm(s, name=f"{at}ln_2")
    y = b.linear(y, mlp, name=f"{at}mlp.0")
    y = b.act(y, "gelu", name=f"{at}mlp.1")
    y = b.linear(y, x.features, name=f"{at}mlp.3")
    return b.add(s, y, name=f"{at}add2")


def vit_head(b: Builder, x: S, classes: int) -> T:
    """The encoder's final layernorm, then the classifier on the class token."""
    s = b.layernorm(x, name="encoder.ln")
    return b.linear(b.select_token(s), classes, name="heads.head")


def _vit(patch: int, layers: int = 12, width: int = 768, heads: int = 12,
         mlp: int = 3072) -> Callable[[Builder, T], T]:
    def forward(b: Builder, x: T) -> T:
        s = patch_embedding(b, x, width, patch)
        for i in range(layers):
            s = encoder_layer(b, s, heads, mlp, name=f"encoder.layers.encoder_layer_{i}")
        return vit_head(b, s, 1000)

    return forward


for _patch in (16, 32):
    register(
        f"vit_b_{_patch}",
        image_size=224,
        description=f"ViT-B/{_patch} (Dosovitskiy et al. 2021): 12 encoder layers of width 768, 12 heads, "
        f"{(224 // _patch) ** 2 + 1} tokens at 224",
        source=_TV.format(f"vit_b_{_patch}"),
    )(_vit(_patch))


# -- ConvNeXt -------------------------------------------------------------------------------------------


@register(
    "convnext_tiny",
    image_size=224,
    description="ConvNeXt-T (Liu et al. 2022): 3-3-9-3 blocks of 96-192-384-768 channels, 7x7 depthwise convs, "
    "layernorm, GELU",
    source=_TV.format("convnext_tiny"),
)
def convnext_tiny(b: Builder, x: T) -> T:
    dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
    x = b.conv(x, dims[0], 4, 4, bias=True, name="features.0.0")
    x = b.layernorm(x, name="features.0.1")
    index = 1
    for stage, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        if stage > 0:  # downsampling: LayerNorm2d, then a 2x2 stride-2 conv
            x = b.layernorm(x, name=f"features.{index}.0")
            x = b.conv(x, dim, 2, 2, bias=True, name=f"features.{index}.1")
            index += 1
        for k in range(depth):
            where = f"features.{index}.{k}"
            y = b.conv(x, dim, 7, 1, 3, groups=dim, bias=True, name=f"{where}.block.0")
            t = b.tokens_of(y)  # Permute to channels-last: a view
            t = b.layernorm(t, name=f"{where}.block.2")
            t = b.linear(t, 4 * dim, name=f"{where}.block.3")
            t = b.act(t, "gelu", name=f"{where}.block.4")
            t = b.linear(t, dim, name=f"{where}.block.5")
            b.parameter(dim)  # the layer scale, dim x 1 x 1
            y = b.mul(T(dim, y.h, y.w), T(dim), name=f"{where}.mul")
            x = b.add(y, x, name=f"{where}.add")
        index += 1
    x = b.adaptive_avgpool(x, name="avgpool")
    x = b.layernorm(x, name="classifier.0")
    x = b.flatten(x, name="classifier.1")
    return b.linear(x, 1000, name="classifier.2")


# -- BERT -----------------------------------------------------------------------------------------------

_BERT_VOCAB, _BERT_POSITIONS, _BERT_TYPES = 30522, 512, 2


def _bert(layers: int, width: int, heads: int) -> Callable[[Builder, S], T]:
    def forward(b: Builder, ids: S) -> T:
        if ids.tokens > _BERT_POSITIONS:
            raise ValueError(f"BERT takes at most {_BERT_POSITIONS} tokens, not {ids.tokens}")
        n = ids.tokens
        s = b.embedding(n, _BERT_VOCAB, width, name="embeddings.word_embeddings")
        b.embedding(n, _BERT_TYPES, width, name="embeddings.token_type_embeddings")
        s = b.add(s, s, name="embeddings.add1")
        b.embedding(n, _BERT_POSITIONS, width, name="embeddings.position_embeddings")
        s = b.add(s, s, name="embeddings.add2")
        s = b.layernorm(s, name="embeddings.LayerNorm")
        for i in range(layers):
            where = f"encoder.layer.{i}"
            for proj in ("query", "key", "value"):
                b.linear(s, width, name=f"{where}.attention.self.{proj}")
            y = b.attention(s, heads, name=f"{where}.attention.self.attention")
            y = b.linear(y, width, name=f"{where}.attention.output.dense")
            s = b.add(y, s, name=f"{where}.attention.output.add")
            s = b.layernorm(s, name=f"{where}.attention.output.LayerNorm")
            y = b.linear(s, 4 * width, name=f"{where}.intermediate.dense")
            y = b.act(y, "gelu", name=f"{where}.intermediate.intermediate_act_fn")
            y = b.linear(y, width, name=f"{where}.output.dense")
            s = b.add(y, s, name=f"{where}.output.add")
            s = b.layernorm(s, name=f"{where}.output.LayerNorm")
        x = b.linear(b.select_token(s), width, name="pooler.dense")  # the first token
        return b.act(x, "tanh", name="pooler.activation")

    return forward


_HF = "Hugging Face transformers, {} (eval mode)"
for _name, (_layers, _width, _heads) in {"bert_base": (12, 768, 12), "bert_large": (24, 1024, 16)}.items():
    register(
        _name,
        description=f"BERT-{_name[5:].capitalize()} (Devlin et al. 2019): {_layers} encoder layers of width {_width}, "
        f"{_heads} heads, with the pooler",
        source=_HF.format(f"BertModel, bert-{_name[5:]}-uncased configuration"),
        seq_len=128,
    )(_bert(_layers, _width, _heads))


# -- GPT-2 ----------------------------------------------------------------------------------------------

_GPT2_VOCAB, _GPT2_POSITIONS = 50257, 1024


@register(
    "gpt2",
    description="GPT-2 (Radford et al. 2019), the 124M model: 12 decoder layers of width 768, 12 heads, causal "
    "attention; a prefill computing logits for every token",
    source=_HF.format("GPT2LMHeadModel, gpt2 configuration"),
    seq_len=1024,
)
def gpt2(b: Builder, ids: S) -> S:
    width, heads, layers = 768, 12, 12
    if ids.tokens > _GPT2_POSITIONS:
        raise ValueError(f"GPT-2 takes at most {_GPT2_POSITIONS} tokens, not {ids.tokens}")
    n = ids.tokens
    s = b.embedding(n, _GPT2_VOCAB, width, name="transformer.wte")
    b.embedding(n, _GPT2_POSITIONS, width, name="transformer.wpe")
    s = b.add(s, s, name="transformer.add")
    for i in range(layers):
        where = f"transformer.h.{i}"
        y = b.layernorm(s, name=f"{where}.ln_1")
        qkv = b.linear(y, 3 * width, name=f"{where}.attn.c_attn")
        y = b.attention(S(qkv.tokens, width), heads, causal=True, name=f"{where}.attn.attention")
        y = b.linear(y, width, name=f"{where}.attn.c_proj")
        s = b.add(y, s, name=f"{where}.add1")
        y = b.layernorm(s, name=f"{where}.ln_2")
        y = b.linear(y, 4 * width, name=f"{where}.mlp.c_fc")
        y = b.act(y, "gelu", name=f"{where}.mlp.act", approximate=True)
        y = b.linear(y, width, name=f"{where}.mlp.c_proj")
        s = b.add(s, y, name=f"{where}.add2")
    s = b.layernorm(s, name="transformer.ln_f")
    return b.matmul(s, _GPT2_VOCAB, shared=True, name="lm_head")  # the tied token embedding, transposed
