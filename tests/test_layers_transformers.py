"""The transformer and decoder layer types of the core: shapes, counts and validation, checked against PyTorch
and against counts written out by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralpower as npw
from neuralpower import InputError, Layer
from neuralpower.layers import FIELDS, LAYER_TYPES, MISSING, prepare_rows, type_code

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_linear_on_tokens() -> None:
    layer = Layer("linear", batch=2, tokens=197, in_features=768, out_features=3072)
    out = torch.nn.Linear(768, 3072)(torch.zeros(2, 197, 768))
    assert layer.in_shape == (2, 197, 768) and layer.out_shape == tuple(out.shape)
    assert layer.macs == 2 * 197 * 768 * 3072 and layer.flops == 2 * layer.macs + 2 * 197 * 3072
    assert layer.params == 768 * 3072 + 3072
    assert layer.bytes_input == 2 * 197 * 768 * 4 and layer.bytes_output == 2 * 197 * 3072 * 4
    # one token is the old vector layer, row for row
    assert Layer("linear", in_features=8, out_features=4).row == Layer("linear", tokens=1, in_features=8,
                                                                       out_features=4).row
    assert Layer("linear", in_features=8, out_features=4).out_shape == (1, 4)


@pytest.mark.parametrize("channels_first", [0, 1])
def test_layernorm(channels_first: int) -> None:
    layer = Layer("layernorm", batch=3, tokens=50, in_features=96, channels_first=channels_first, dtype="fp16")
    assert layer.params == sum(p.numel() for p in torch.nn.LayerNorm(96).parameters())
    assert layer.out_shape == (3, 50, 96)
    assert layer.bytes_input == layer.bytes_output == 3 * 50 * 96 * 2
    assert layer.bytes_weights == 2 * 96 * 2 and layer.flops == 8 * 3 * 50 * 96


@pytest.mark.parametrize(("heads", "broadcast"), [(1, 0), (12, 0), (12, 1), (1, 1)])
def test_matmul(heads: int, broadcast: int) -> None:
    n, m, k, out = 2, 7, 5, 3
    layer = Layer("matmul", batch=n, heads=heads, tokens=m, in_features=k, out_features=out, broadcast=broadcast)
    lead = (n, heads) if heads > 1 else (n,)
    a = torch.zeros(*lead, m, k)
    b = torch.zeros(k, out) if broadcast else torch.zeros(*lead, k, out)
    assert layer.in_shape == tuple(a.shape) and layer.out_shape == tuple(torch.matmul(a, b).shape)
    assert layer.macs == n * heads * m * k * out and layer.flops == 2 * layer.macs and layer.params == 0
    assert layer.bytes_input == 4 * (a.numel() + b.numel())
    assert layer.bytes_output == 4 * n * heads * m * out


def _pairs(q: int, kv: int, causal: bool) -> int:
    """Query-key pairs scored, from PyTorch's own top-left causal mask."""
    mask = torch.ones(q, kv, dtype=torch.bool).tril() if causal else torch.ones(q, kv, dtype=torch.bool)
    return int(mask.sum())


@pytest.mark.parametrize(("q", "kv", "causal"), [(197, 197, False), (5, 5, True), (3, 8, True), (9, 4, True),
                                                 (1, 1024, True), (16, 64, False)])
def test_attention_counts_follow_pytorch(q: int, kv: int, causal: bool) -> None:
    n, heads, d = 2, 4, 16
    layer = Layer("attention", batch=n, heads=heads, tokens=q, kv_tokens=kv, head_dim=d, causal=int(causal))
    out = F.scaled_dot_product_attention(torch.zeros(n, heads, q, d), torch.zeros(n, heads, kv, d),
                                         torch.zeros(n, heads, kv, d), is_causal=causal)
    assert layer.in_shape == (n, heads, q, d) and layer.out_shape == tuple(out.shape)
    pairs = n * heads * _pairs(q, kv, causal)
    assert layer.macs == 2 * pairs * d and layer.flops == 2 * layer.macs + 6 * pairs
    assert layer.bytes_input == 4 * n * heads * d * (q + 2 * kv) and layer.bytes_output == 4 * n * heads * q * d
    assert layer.params == 0


def test_attention_defaults_kv_to_the_query_length() -> None:
    layer = Layer("attention", heads=2, tokens=10, head_dim=8)
    assert layer.kv_tokens == 10 and layer.causal == 0


# -- attention as LLM serving runs it: grouped-query heads, a sliding window, K and V in a dtype of their own --------


def _kv_bytes(layer: Layer) -> int:
    """The bytes of K and V a layer reads: its input less Q (at the layer's dtype)."""
    q = layer.batch * layer.heads * layer.tokens * layer.head_dim * {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}[
        layer.dtype]
    return layer.bytes_input - q


def test_grouped_query_attention_reads_kv_heads_of_k_and_v() -> None:
    n, heads, q, kv, d = 2, 8, 16, 64, 32
    mha, gqa, mqa = (Layer("attention", batch=n, heads=heads, kv_heads=k, tokens=q, kv_tokens=kv, head_dim=d,
                           dtype="fp16") for k in (8, 2, 1))
    assert mha.row == Layer("attention", batch=n, heads=heads, tokens=q, kv_tokens=kv, head_dim=d, dtype="fp16").row
    # Q is 2 x 2 x 8 x 16 x 32 = 16384 bytes; K and V 2 x 2 x 64 x 32 x 2 = 16384 per key and value head
    assert mha.bytes_input == 2 * n * d * (heads * q + 2 * heads * kv) == 16384 + 8 * 16384
    assert gqa.bytes_input == 2 * n * d * (heads * q + 2 * 2 * kv) == 16384 + 2 * 16384
    assert mqa.bytes_input == 2 * n * d * (heads * q + 2 * 1 * kv) == 16384 + 16384
    assert _kv_bytes(mha) == 4 * _kv_bytes(gqa) == 8 * _kv_bytes(mqa)
    for layer in (gqa, mqa):  # every query head still attends: the same products, the same output
        assert (layer.macs, layer.flops, layer.bytes_output, layer.out_shape, layer.in_shape) == (
            mha.macs, mha.flops, mha.bytes_output, mha.out_shape, mha.in_shape)
    f = mqa.features()
    assert f["kv_heads"] == 1 and f["heads"] == 8
    assert f["elements_in"] == n * d * (heads * q + 2 * kv) and f["bytes_input"] == mqa.bytes_input


def _window_pairs(q: int, kv: int, causal: bool, window: int) -> int:
    """Pairs scored with a sliding window, from a band mask (causal, q <= kv: query i sees keys i - window + 1
    to i) or the count per query (min(kv, window) without the mask)."""
    if not causal:
        return q * min(kv, window)
    assert q <= kv
    i = torch.arange(q)[:, None]
    j = torch.arange(kv)[None, :]
    return int(((j <= i) & (j > i - window)).sum())


@pytest.mark.parametrize(("q", "kv", "causal", "window"),
                         [(5, 5, True, 2), (16, 16, True, 4), (3, 8, True, 2), (8, 8, False, 3), (1, 4096, False, 512),
                          (16, 64, False, 100), (6, 6, True, 6)])
def test_sliding_window_pairs(q: int, kv: int, causal: bool, window: int) -> None:
    n, heads, d = 2, 4, 16
    layer = Layer("attention", batch=n, heads=heads, tokens=q, kv_tokens=kv, head_dim=d, causal=int(causal),
                  window=window)
    pairs = n * heads * _window_pairs(q, kv, causal, window)
    assert layer.macs == 2 * pairs * d and layer.flops == 2 * layer.macs + 6 * pairs
    plain = Layer("attention", batch=n, heads=heads, tokens=q, kv_tokens=kv, head_dim=d, causal=int(causal))
    assert layer.bytes_input == plain.bytes_input and layer.bytes_output == plain.bytes_output  # whole K and V


def test_sliding_window_by_hand() -> None:
    # q = kv = 5, window 2, causal: queries see 1, 2, 2, 2, 2 keys
    layer = Layer("attention", heads=1, tokens=5, head_dim=1, causal=1, window=2)
    assert layer.macs == 2 * 9 and layer.flops == 4 * 9 + 6 * 9
    assert Layer("attention", batch=3, heads=4, tokens=5, head_dim=1, causal=1, window=2).macs == 3 * 4 * 2 * 9
    # without the mask, each query sees min(kv, window) keys
    assert Layer("attention", heads=1, tokens=5, head_dim=1, window=2).macs == 2 * 5 * 2
    # more queries than keys (top-left causal: queries past the keys see all of them): capped at the window
    assert Layer("attention", heads=1, tokens=9, kv_tokens=4, head_dim=1, causal=1, window=3).macs == 2 * (
        1 + 2 + 3 * 7)


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("window", [10, 11, 4096])
def test_a_window_past_the_keys_is_no_window(causal: int, window: int) -> None:
    base = {"batch": 2, "heads": 3, "tokens": 10, "kv_tokens": 10, "head_dim": 8, "causal": causal}
    windowed, plain = Layer("attention", window=window, **base), Layer("attention", **base)
    assert windowed.info == plain.info and windowed.row != plain.row
    assert windowed.features()["window"] == window and plain.features()["window"] == 0


def test_kv_dtype_sets_the_bytes_of_k_and_v() -> None:
    base = {"batch": 4, "heads": 32, "kv_heads": 8, "tokens": 1, "kv_tokens": 4096, "head_dim": 128, "dtype": "bf16"}
    bf16, fp8 = Layer("attention", **base), Layer("attention", kv_dtype="fp8", **base)
    assert bf16.kv_dtype == "bf16" and fp8.kv_dtype == "fp8" and fp8.dtype == "bf16"
    assert _kv_bytes(bf16) == 2 * _kv_bytes(fp8) == 2 * (4 * 8 * 128 * 2 * 4096)
    assert bf16.bytes_input - _kv_bytes(bf16) == fp8.bytes_input - _kv_bytes(fp8) == 4 * 32 * 128 * 2  # Q in bf16
    assert fp8.bytes_output == bf16.bytes_output and fp8.macs == bf16.macs and fp8.flops == bf16.flops
    assert fp8.features()["kv_dtype_bytes"] == 1 and bf16.features()["kv_dtype_bytes"] == 2
    assert fp8.features()["dtype_bytes"] == 2
    assert fp8.features()["elements_in"] == bf16.features()["elements_in"] == 4 * 128 * (32 + 2 * 8 * 4096)
    assert fp8.config()["kv_dtype"] == "fp8" and fp8.replace() == fp8
    all8 = Layer("attention", **{**base, "dtype": "fp8"})
    assert all8.bytes_input == bf16.bytes_input // 2 and all8.kv_dtype == "fp8"


def test_kv_fields_follow_what_they_default_to() -> None:
    plain = Layer("attention", heads=8, tokens=4, head_dim=8, dtype="fp32")
    assert (plain.kv_heads, plain.kv_dtype, plain.window) == (8, "fp32", 0)
    # a copy in another dtype or with other heads keeps K and V as plain attention's ...
    assert plain.replace(dtype="fp16").kv_dtype == "fp16" and plain.replace(heads=4).kv_heads == 4
    assert npw.Architecture("a", [plain]).with_dtype("bf16")[0].kv_dtype == "bf16"
    # ... and the ones set apart as they were
    gqa = plain.replace(kv_heads=2, kv_dtype="fp8")
    assert gqa.replace(dtype="fp16").kv_dtype == "fp8" and gqa.replace(heads=16).kv_heads == 2
    assert gqa.replace(dtype="fp16", kv_dtype="fp16").kv_dtype == "fp16"
    # the types without K and V have none (0 in their rows, as every field a type does not read)
    relu = Layer("relu", in_channels=4, dtype="fp16")
    assert relu.kv_dtype is None and relu.kv_heads == 0 and relu.window == 0
    f = relu.features()
    assert f["kv_heads"] == f["window"] == f["kv_dtype_bytes"] == 0


@pytest.mark.parametrize(
    ("fields", "column", "message"),
    [
        ({"kv_heads": 3}, "kv_heads", "kv_heads 3 does not divide heads 8"),
        ({"kv_heads": 16}, "kv_heads", "kv_heads 16 is more than heads 8"),
        ({"kv_heads": 0}, "kv_heads", "0 must be at least 1"),
        ({"window": -1}, "window", "-1 must be at least 0"),
        ({"kv_dtype": "int4"}, "kv_dtype", r"unknown dtype 'int4' \(known: fp32, fp16, bf16, fp8\)"),
    ],
)
def test_invalid_serving_attention_names_the_field(fields: dict[str, Any], column: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        Layer("attention", heads=8, tokens=4, head_dim=8, **fields)
    assert err.value.column == column and "\n" not in str(err.value)


def test_a_bad_kv_dtype_code_in_a_row_names_the_field() -> None:
    row = np.array([Layer("attention", heads=8, tokens=4, head_dim=8).row], dtype=np.int64)
    row[0, FIELDS.index("kv_dtype")] = 9
    assert prepare_rows(row) == (0, "kv_dtype", "unknown dtype code 9")


def test_describe_shows_the_serving_fields_and_a_new_dtype_keeps_them() -> None:
    from neuralpower.describe import Listing
    from neuralpower.layers import set_dtype

    base = {"heads": 32, "tokens": 16, "head_dim": 64, "dtype": "bf16"}
    arch = npw.Architecture("llm", [Layer("attention", kv_heads=8, causal=1, window=4096, kv_dtype="fp8", **base),
                                    Layer("attention", **base), Layer("relu", in_channels=4, dtype="bf16")])
    assert Listing.from_architecture(arch).configs() == ["h32 kv8 causal w4096 kv:fp8", "h32", ""]
    rows = np.array(arch.rows())
    set_dtype(rows, npw.DTYPES.index("fp16"))
    assert prepare_rows(rows) is None
    kv = FIELDS.index("kv_dtype")
    assert [npw.DTYPES[c] for c in rows[:2, kv]] == ["fp8", "fp16"] and rows[2, kv] == 0  # relu: none


def test_attention_models_use_the_serving_fields() -> None:
    from neuralpower import _evaluator as ev
    from neuralpower.layers import FEATURES

    names = [FEATURES[f] for f in ev.type_features(type_code("attention"))]
    assert names[:9] == ["batch", "heads", "tokens", "kv_tokens", "head_dim", "causal", "kv_heads", "window",
                         "kv_dtype_bytes"]
    fields = {FIELDS[f] for f in ev.type_fields(type_code("attention"))}
    assert {"kv_heads", "window", "kv_dtype"} <= fields
    for t in LAYER_TYPES:
        if t != "attention":
            assert not {"kv_heads", "window", "kv_dtype"} & {FIELDS[f] for f in ev.type_fields(type_code(t))}


def test_embedding() -> None:
    layer = Layer("embedding", batch=4, tokens=128, in_features=30522, out_features=768, dtype="fp16")
    table = torch.nn.Embedding(30522, 768)
    out = table(torch.zeros(4, 128, dtype=torch.long))
    assert layer.in_shape == (4, 128) and layer.out_shape == tuple(out.shape)
    assert layer.params == table.weight.numel() and layer.macs == 0 and layer.flops == 0
    assert layer.bytes_input == 4 * 128 * 8  # int64 indices
    assert layer.bytes_weights == 4 * 128 * 768 * 2  # the rows gathered, not the table
    assert layer.bytes_output == 4 * 128 * 768 * 2


@pytest.mark.parametrize(("mode", "size"), [("nearest", (16, 16)), ("bilinear", (15, 9)), ("nearest", (3, 5))])
def test_upsample(mode: str, size: tuple[int, int]) -> None:
    layer = Layer("upsample", batch=2, in_channels=3, in_h=8, in_w=6, out_h=size[0], out_w=size[1],
                  interpolation=mode)
    out = F.interpolate(torch.zeros(2, 3, 8, 6), size=size, mode=mode)
    assert layer.out_shape == tuple(out.shape) and layer.interpolation == ("nearest", "bilinear").index(mode)
    assert layer.flops == (7 * out.numel() if mode == "bilinear" else 0)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding", "dilation", "groups"),
    [(4, 2, 1, 0, 1, 1), (3, 2, 1, 1, 1, 1), (2, 2, 0, 0, 1, 4), (3, 1, 0, 0, 2, 1), (3, 3, 2, 2, 1, 2)],
)
def test_conv_transpose2d_follows_pytorch(
    kernel: int, stride: int, padding: int, output_padding: int, dilation: int, groups: int
) -> None:
    module = torch.nn.ConvTranspose2d(8, 12, kernel, stride, padding, output_padding, groups, True, dilation)
    layer = Layer("conv_transpose2d", batch=2, in_channels=8, in_h=7, in_w=5, out_channels=12, kernel=kernel,
                  stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
    out = module(torch.zeros(2, 8, 7, 5))
    assert layer.out_shape == tuple(out.shape)
    assert layer.params == sum(p.numel() for p in module.parameters())
    assert layer.macs == 2 * 8 * 7 * 5 * (12 // groups) * kernel * kernel
    assert layer.flops == 2 * layer.macs + out.numel()


def test_gelu_tanh_and_tanh() -> None:
    exact = Layer("gelu", in_channels=3072, in_h=197)
    approx = Layer("gelu", in_channels=3072, in_h=197, approximate="tanh")
    assert exact.approximate == 0 and approx.approximate == 1 and approx.row != exact.row
    assert approx.flops == 9 * 3072 * 197 and exact.flops == 8 * 3072 * 197
    assert Layer("tanh", in_channels=768).flops == 5 * 768


def test_softmax_last_axis() -> None:
    old = Layer("softmax", in_channels=1000)
    assert old.channels_first == 1  # the default is the old behaviour: over dim 1 of N x C x H x W
    scores = Layer("softmax", batch=2, in_channels=197, in_h=12 * 197, channels_first=0)
    assert scores.out_shape == (2, 197, 12 * 197, 1) and scores.flops == 5 * 2 * 197 * 12 * 197


@pytest.mark.parametrize(
    ("type_name", "fields", "column", "message"),
    [
        ("attention", {"tokens": 4, "head_dim": 8}, "heads", "is required for attention layers"),
        ("attention", {"heads": 2, "tokens": 4, "head_dim": 8, "causal": 2}, "causal", "must be 0 or 1"),
        ("matmul", {"in_features": 4}, "out_features", "is required"),
        ("layernorm", {"in_features": 8, "channels_first": -1}, "channels_first", "must be 0 or 1"),
        ("embedding", {"in_features": 10, "out_features": 4, "tokens": 0}, "tokens", "must be at least 1"),
        ("upsample", {"in_channels": 3, "in_h": 4, "in_w": 4, "out_h": 8}, "out_w", "is required"),
        ("conv_transpose2d", {"in_channels": 4, "in_h": 4, "in_w": 4, "out_channels": 4, "kernel": 3, "stride": 2,
                              "output_padding": 2}, "output_padding_h", "must be smaller than the stride 2"),
        ("conv_transpose2d", {"in_channels": 4, "in_h": 1, "in_w": 1, "out_channels": 4, "kernel": 1,
                              "padding": 1}, "kernel_h", "leaves no output"),
        ("conv_transpose2d", {"in_channels": 6, "in_h": 4, "in_w": 4, "out_channels": 4, "kernel": 3,
                              "groups": 3}, "groups", "does not divide out_channels 4"),
        ("gelu", {"in_channels": 3, "approximate": 3}, "approximate", "must be 0 or 1"),
    ],
)
def test_invalid_layers_name_the_field(type_name: str, fields: dict[str, int], column: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        Layer(type_name, **fields)
    assert err.value.column == column and "\n" not in str(err.value)


def test_named_values() -> None:
    layer = Layer("upsample", in_channels=1, in_h=2, in_w=2, out_h=4, out_w=4, interpolation="Bilinear")
    assert layer.interpolation == 1
    with pytest.raises(InputError, match=r"unknown interpolation 'cubic' \(known: nearest, bilinear"):
        Layer("upsample", in_channels=1, in_h=2, in_w=2, out_h=4, out_w=4, interpolation="cubic")
    with pytest.raises(InputError, match="unknown approximate 'erf'"):
        Layer("gelu", in_channels=1, approximate="erf")


_NEW = ["linear", "layernorm", "matmul", "attention", "embedding", "upsample", "conv_transpose2d", "gelu", "tanh",
        "softmax"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_NEW), st.lists(st.integers(-2, 40) | st.just(MISSING) | st.integers(2**20, 2**24 + 1),
                                       min_size=len(FIELDS) - 1, max_size=len(FIELDS) - 1))
def test_any_row_of_a_new_type_is_rejected_or_computable(type_name: str, values: list[int]) -> None:
    """Rows of a known type with arbitrary fields: a clean rejection, or counts and features that are all
    non-negative (no overflow, no negative output size)."""
    row = np.array([[type_code(type_name), *values]], dtype=np.int64)
    bad = prepare_rows(row)
    if bad is None:
        layer = Layer.from_row(row[0])
        assert min(layer.info) >= 0 and min(layer.out_shape) >= 1
        assert all(v >= 0 for v in layer.features().values())
    else:
        assert bad[1] in FIELDS and "\n" not in bad[2]


def test_every_type_has_a_name_and_fields() -> None:
    for name in ("layernorm", "matmul", "attention", "embedding", "upsample", "conv_transpose2d", "tanh"):
        assert name in LAYER_TYPES
