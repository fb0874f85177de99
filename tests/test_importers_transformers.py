"""Importing transformers and ConvNeXt: torchvision- and Hugging Face-shaped modules (replicas in
_transformer_replicas.py) equal their zoo twins; their ONNX exports import like the modules; each new
operation maps as the layer types define it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuralpower import InputError, zoo
from neuralpower.importers import from_onnx, from_torch

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
nn = torch.nn
F = torch.nn.functional

import _transformer_replicas as R  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from onnx_builder import OPSET, shape_only  # noqa: E402

# -- the zoo's networks, at their real sizes (built on the meta device: shapes only, no memory) ----------

_REAL = {
    "vit_b_16": (lambda: R.vit_b(16), (1, 3, 224, 224)),
    "vit_b_32": (lambda: R.vit_b(32), (1, 3, 224, 224)),
    "convnext_tiny": (R.convnext_tiny, (1, 3, 224, 224)),
    "bert_base": (lambda: R.BertModel(R.BertConfig()), (1, 128)),
    "bert_large": (lambda: R.BertModel(R.BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                      intermediate_size=4096)), (1, 128)),
    "gpt2": (lambda: R.GPT2LMHeadModel(R.GPT2Config()), (1, 1024)),
}


def _rows(arch: Any) -> list[tuple[int, ...]]:
    return [layer.row for layer in arch]


@pytest.mark.parametrize("name", list(_REAL))
def test_replica_equals_its_zoo_twin(name: str) -> None:
    make, shape = _REAL[name]
    with torch.device("meta"):
        net = make()
    arch = from_torch(net, shape)
    twin = zoo.build(name)
    assert _rows(arch) == _rows(twin)  # types, shapes and every field, layer by layer (names may differ)
    assert arch.totals() == twin.totals()
    assert arch.totals()["params"] == R.count(net) == twin.totals()["params"]
    assert arch.meta.get("params_outside_layers", 0) == twin.meta.get("params_outside_layers", 0)


def test_replica_at_another_batch_and_names() -> None:
    with torch.device("meta"):
        net = R.vit_b(32)
    arch = from_torch(net, (4, 3, 224, 224), dtype="fp16")
    assert _rows(arch) == _rows(zoo.build("vit_b_32", batch=4, dtype="fp16"))
    names = [layer.name for layer in arch]
    assert names[:3] == ["conv_proj", "cat", "add"]
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj" in names
    assert "encoder.layers.encoder_layer_11.mlp.3" in names and names[-1] == "heads.head"


# -- small configurations: they run, and their parameters are counted once ------------------------------


def _small() -> dict[str, tuple[Any, tuple[int, ...], Any]]:
    return {
        "vit": (R.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=10), (2, 3, 32, 32), torch.float32),
        "convnext": (R.ConvNeXt([R.CNBlockConfig(8, 16, 1), R.CNBlockConfig(16, None, 2)], 0.1, num_classes=10),
                     (2, 3, 32, 32), torch.float32),
        "bert": (R.BertModel(R.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=16)), (2, 8), torch.long),
        "gpt2": (R.GPT2LMHeadModel(R.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)),
                 (2, 8), torch.long),
    }


@pytest.mark.parametrize("name", ["vit", "convnext", "bert", "gpt2"])
def test_small_replica_runs_and_imports(name: str) -> None:
    net, shape, kind = _small()[name]
    net.train()
    arch = from_torch(net, shape)
    assert net.training  # restored
    assert arch.totals()["params"] == R.count(net) and arch.batch == shape[0]
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(shape, dtype=kind))
    last = out[-1] if isinstance(out, tuple) else out
    assert last.shape[1:].numel() == int(np.prod(arch[-1].out_shape[1:]))  # what the last layer writes


# -- ONNX: PyTorch's own exports of the small replicas import like the modules ---------------------------


def _export(net: Any, shape: tuple[int, ...], kind: Any, path: Path, opset: int) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(shape, dtype=kind),), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"])
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("opset", [14, 17, 20])  # 14: layernorm and GELU written out; 20: Gelu
@pytest.mark.parametrize("name", ["vit", "convnext", "bert", "gpt2"])
def test_exported_onnx_imports_like_the_module(name: str, opset: int, tmp_path: Path) -> None:
    net, shape, kind = _small()[name]
    path = tmp_path / f"{name}.onnx"
    _export(net, shape, kind, path, opset)
    ours, theirs = from_onnx(path), from_torch(net, shape)
    assert _rows(ours) == _rows(theirs)
    if name != "convnext":  # the exporter stores equal layer scales once
        assert ours.totals() == theirs.totals()


# -- PyTorch: one operation at a time -------------------------------------------------------------------


class _Attention(nn.Module):
    def __init__(self, need_weights: bool = False, cross: bool = False) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.memory = nn.Linear(16, 16)
        self.need_weights, self.cross = need_weights, cross

    def forward(self, x):  # type: ignore[no-untyped-def]
        kv = self.memory(x[:, :3]) if self.cross else x
        y, _ = self.mha(x, kv, kv, need_weights=self.need_weights)
        return y


def test_torch_multihead_attention_forms() -> None:
    arch = from_torch(_Attention(), (2, 10, 16))
    assert [layer.type for layer in arch] == ["linear", "attention", "linear"]
    assert (arch[0].tokens, arch[0].out_features, arch[1].heads, arch[1].head_dim) == (10, 48, 4, 4)
    weights = from_torch(_Attention(need_weights=True), (2, 10, 16))
    assert [(layer.type, layer.name) for layer in weights][1:4] == [
        ("matmul", "mha.scores"), ("softmax", "mha.softmax"), ("matmul", "mha.weighted")]
    assert weights[2].channels_first == 0 and weights[2].in_channels == 10 and weights[2].in_h == 40
    cross = from_torch(_Attention(cross=True), (2, 10, 16))
    assert [layer.name for layer in cross] == ["memory", "mha.in_proj_q", "mha.in_proj_kv", "mha.attention",
                                               "mha.out_proj"]
    assert (cross[3].tokens, cross[3].kv_tokens, cross[2].tokens) == (10, 3, 3)
    net = _Attention(cross=True)
    assert from_torch(net, (1, 10, 16)).totals()["params"] == R.count(net)
    assert from_torch(_Attention(), (1, 10, 16)).totals()["params"] == R.count(net) - 16 * 16 - 16  # memory unused


class _Decoder(nn.Module):
    """Written-out attention, a causal SDPA, an erf GELU by hand, tanh, scalars, a tied head, a shared matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.qkv = nn.Linear(16, 48)
        self.ln = nn.LayerNorm(16)
        self.gate = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, 40, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):  # type: ignore[no-untyped-def]
        x = self.emb(ids)
        q, k, v = self.qkv(x).view(ids.shape[0], ids.shape[1], 3, 4, 4).permute(2, 0, 3, 1, 4)
        scores = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
        y = (scores @ v).transpose(1, 2).reshape(x.shape)
        y = y + F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        y = 0.5 * y * (1.0 + torch.erf(y / 1.4142135623730951))
        y = torch.tanh(self.ln(y)) * self.gate
        return self.head(y) + y @ self.emb.weight.t()


def test_torch_decoder_operations() -> None:
    net = _Decoder()
    arch = from_torch(net, (3, 7))
    assert [layer.type for layer in arch] == [
        "embedding", "linear", "matmul", "mul", "softmax", "matmul", "attention", "add", "gelu", "layernorm", "tanh",
        "mul", "matmul", "matmul", "add"]
    emb, _, scores, scale, softmax, weighted, sdpa = arch[:7]
    assert (emb.tokens, emb.in_features, emb.out_features) == (7, 40, 16)
    assert (scores.heads, scores.tokens, scores.in_features, scores.out_features, scores.broadcast) == (4, 7, 4, 7, 0)
    assert scale.broadcast == 1 and (softmax.channels_first, softmax.in_channels, softmax.in_h) == (0, 7, 28)
    assert (weighted.in_features, weighted.out_features) == (7, 4)
    assert (sdpa.causal, sdpa.heads, sdpa.tokens, sdpa.head_dim) == (1, 4, 7, 4)
    assert arch[8].approximate == 0 and arch[11].broadcast == 1  # the gate: one value per feature
    tied, shared = arch[12], arch[13]  # the tied head, and the product with the table itself
    assert (tied.broadcast, tied.tokens, tied.out_features, shared.broadcast) == (1, 7, 40, 1)
    assert arch.totals()["params"] == R.count(net)
    assert arch.meta["params_outside_layers"] == 16  # the gate


class _Decode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.near = nn.Upsample(scale_factor=2)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.act(self.up(x))
        x = self.near(x)
        return F.interpolate(x, size=(20, 24), mode="bilinear", align_corners=False)


def test_torch_upsampling() -> None:
    arch = from_torch(_Decode(), (2, 8, 5, 6))
    assert [layer.type for layer in arch] == ["conv_transpose2d", "gelu", "upsample", "upsample"]
    up = arch[0]
    assert up.out_shape == (2, 4, 10, 12) and up.output_padding == (1, 1) and up.params == 8 * 4 * 9 + 4
    assert arch[1].approximate == 1
    assert (arch[2].interpolation, arch[2].out_h, arch[3].interpolation, arch[3].out_w) == (0, 20, 1, 24)
    with pytest.raises(InputError, match=r"interpolate mode='bicubic'"):
        from_torch(nn.Upsample(scale_factor=2, mode="bicubic"), (1, 3, 4, 4))


# -- ONNX graphs written with the helper API ---------------------------------------------------------------


def _model(nodes: list[Any], inits: list[Any], shape: list[Any], elem: int = TensorProto.FLOAT) -> Any:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _const(name: str, value: Any, dtype: Any = np.int64) -> Any:
    return onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _vit_graph(tokens: int = 4, width: int = 8, heads: int = 2) -> tuple[list[Any], list[Any]]:
    """Patch embedding, class token, position embedding, one pre-norm block with attention, the head."""
    d, t = width // heads, tokens + 1
    inits = [
        shape_only("patch.w", [width, 3, 4, 4]), shape_only("patch.b", [width]),
        _const("flat", [0, width, tokens]), _const("cls_shape", [2, 1, width]),
        onnx.numpy_helper.from_array(np.zeros((1, 1, width), np.float32), "cls"),
        shape_only("pos", [1, t, width]), shape_only("ln.s", [width]), shape_only("ln.b", [width]),
        shape_only("qkv.w", [width, 3 * width]), shape_only("qkv.b", [3 * width]), _const("split", [width] * 3),
        _const("heads", [0, t, heads, d]), _const("merge", [0, t, width]),
        onnx.numpy_helper.from_array(np.array(d ** -0.5, np.float32), "scale"),
        shape_only("o.w", [width, width]), shape_only("o.b", [width]),
        shape_only("fc.w", [width, 2 * width]), shape_only("fc.b", [2 * width]),
        shape_only("fc2.w", [2 * width, width]), shape_only("fc2.b", [width]),
        onnx.numpy_helper.from_array(np.array(2 ** -0.5, np.float32), "rsqrt2"),
        onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        _const("first", 0), shape_only("head.w", [10, width]), shape_only("head.b", [10]),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "patch.w", "patch.b"], ["p"], "conv_proj", kernel_shape=[4, 4], strides=[4, 4]),
        n("Reshape", ["p", "flat"], ["pf"]), n("Transpose", ["pf"], ["tok"], perm=[0, 2, 1]),
        n("Expand", ["cls", "cls_shape"], ["clsx"]), n("Concat", ["clsx", "tok"], ["seq"], "cat", axis=1),
        n("Add", ["seq", "pos"], ["s0"], "pos_add"),
        n("LayerNormalization", ["s0", "ln.s", "ln.b"], ["h"], "ln_1", axis=-1),
        n("MatMul", ["h", "qkv.w"], ["qkv0"], "in_proj"), n("Add", ["qkv.b", "qkv0"], ["qkv"], "in_proj_bias"),
        n("Split", ["qkv", "split"], ["q0", "k0", "v0"], axis=2),
        n("Reshape", ["q0", "heads"], ["q1"]), n("Transpose", ["q1"], ["q"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k0", "heads"], ["k1"]), n("Transpose", ["k1"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v0", "heads"], ["v1"]), n("Transpose", ["v1"], ["v"], perm=[0, 2, 1, 3]),
        n("MatMul", ["q", "kt"], ["scores"], "qk"), n("Mul", ["scores", "scale"], ["scaled"], "scale"),
        n("Softmax", ["scaled"], ["probs"], "softmax", axis=-1), n("MatMul", ["probs", "v"], ["att"], "attention"),
        n("Transpose", ["att"], ["att_t"], perm=[0, 2, 1, 3]), n("Reshape", ["att_t", "merge"], ["att_m"]),
        n("MatMul", ["att_m", "o.w"], ["o0"], "out_proj"), n("Add", ["o0", "o.b"], ["o"], "out_proj_bias"),
        n("Add", ["o", "s0"], ["s1"], "add1"),
        n("MatMul", ["s1", "fc.w"], ["f0"], "mlp.0"), n("Add", ["f0", "fc.b"], ["f"], "mlp.0.bias"),
        n("Mul", ["f", "rsqrt2"], ["g0"]), n("Erf", ["g0"], ["g1"]), n("Add", ["g1", "one"], ["g2"]),
        n("Mul", ["f", "g2"], ["g3"]), n("Mul", ["g3", "half"], ["g"], "mlp.1"),
        n("MatMul", ["g", "fc2.w"], ["m0"], "mlp.3"), n("Add", ["m0", "fc2.b"], ["m"], "mlp.3.bias"),
        n("Add", ["s1", "m"], ["s2"], "add2"),
        n("Gather", ["s2", "first"], ["c"], axis=1), n("Gemm", ["c", "head.w", "head.b"], ["out"], "head", transB=1),
    ]
    return nodes, inits


def test_onnx_vit_style_graph(tmp_path: Path) -> None:
    nodes, inits = _vit_graph()
    path = tmp_path / "vit.onnx"
    onnx.save(_model(nodes, inits, [2, 3, 8, 8]), path)
    arch = from_onnx(path)
    assert [(layer.type, layer.name) for layer in arch] == [
        ("conv2d", "conv_proj"), ("concat", "cat"), ("add", "pos_add"), ("layernorm", "ln_1"), ("linear", "in_proj"),
        ("attention", "attention"), ("linear", "out_proj"), ("add", "add1"), ("linear", "mlp.0"), ("gelu", "mlp.1"),
        ("linear", "mlp.3"), ("add", "add2"), ("linear", "head")]
    cat, pos, ln, qkv, att = arch[1:6]
    assert (cat.in_channels, cat.in_h, cat.inputs) == (8, 5, 2) and (pos.broadcast, pos.in_h) == (0, 5)
    assert (ln.tokens, ln.in_features, ln.channels_first) == (5, 8, 0)
    assert (qkv.tokens, qkv.out_features, qkv.bias) == (5, 24, 1)
    assert (att.heads, att.tokens, att.kv_tokens, att.head_dim, att.causal) == (2, 5, 5, 4, 0)
    assert arch[9].approximate == 0 and (arch[-1].tokens, arch[-1].out_features) == (1, 10)
    assert arch.batch == 2
    # the class token and the position embedding are operands no layer holds
    assert arch.meta["params_outside_layers"] == 8 + 5 * 8
    expected = (8 * 48 + 8) + 2 * 8 + 8 * 24 + 24 + 8 * 8 + 8 + 8 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10 + 48
    assert arch.totals()["params"] == expected


def _gpt_graph(tokens: int = 6, width: int = 8, vocab: int = 20) -> tuple[list[Any], list[Any]]:
    """Token and position embeddings, a causal attention with the mask PyTorch builds, the tanh GELU by hand,
    a tied head (the table transposed in the graph)."""
    inits = [
        shape_only("wte", [vocab, width]), shape_only("wpe", [16, width]), _const("positions", [list(range(tokens))]),
        shape_only("ln.s", [width]), shape_only("ln.b", [width]),
        shape_only("q.w", [width, width]), shape_only("k.w", [width, width]), shape_only("v.w", [width, width]),
        _const("heads", [0, tokens, 2, width // 2]), _const("merge", [0, tokens, width]),
        _const("square", [tokens, tokens]), onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        onnx.numpy_helper.from_array(np.array(-1e9, np.float32), "neg"),
        onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s"),
        onnx.numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        onnx.numpy_helper.from_array(np.array(0.044715, np.float32), "c"),
        onnx.numpy_helper.from_array(np.array(np.sqrt(2 / np.pi), np.float32), "k"),
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["wte", "x"], ["e"], "wte"), n("Gather", ["wpe", "positions"], ["p"], "wpe"),
        n("Add", ["e", "p"], ["h0"], "add_pos"),
        n("LayerNormalization", ["h0", "ln.s", "ln.b"], ["h"], "ln_1"),
    ]
    for part in ("q", "k", "v"):
        nodes += [n("MatMul", ["h", f"{part}.w"], [f"{part}0"], part),
                  n("Reshape", [f"{part}0", "heads"], [f"{part}1"]),
                  n("Transpose", [f"{part}1"], [part + ("t" if part == "k" else "")],
                    perm=[0, 2, 3, 1] if part == "k" else [0, 2, 1, 3])]
    nodes += [
        n("Expand", ["one", "square"], ["ones"]), n("Trilu", ["ones"], ["lower"], upper=0),
        n("Equal", ["lower", "zero"], ["above"]), n("Where", ["above", "neg", "zero"], ["mask"]),
        n("Mul", ["q", "s"], ["qs"]), n("MatMul", ["qs", "kt"], ["scores"], "qk"),
        n("Add", ["scores", "mask"], ["masked"]), n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["att"], "attn"),
        n("Transpose", ["att"], ["att_t"], perm=[0, 2, 1, 3]), n("Reshape", ["att_t", "merge"], ["y"]),
        n("Pow", ["y", "three"], ["y3"]), n("Mul", ["y3", "c"], ["y3c"]), n("Add", ["y", "y3c"], ["inner"]),
        n("Mul", ["inner", "k"], ["arg"]), n("Tanh", ["arg"], ["t"]), n("Add", ["t", "one"], ["t1"]),
        n("Mul", ["y", "half"], ["yh"]), n("Mul", ["yh", "t1"], ["g"], "gelu"),
        n("Transpose", ["wte"], ["wte_t"], perm=[1, 0]), n("MatMul", ["g", "wte_t"], ["logits"], "lm_head"),
    ]
    return nodes, inits


def test_onnx_gpt_style_graph(tmp_path: Path) -> None:
    nodes, inits = _gpt_graph()
    path = tmp_path / "gpt.onnx"
    onnx.save(_model(nodes, inits, [3, 6], TensorProto.INT64), path)
    arch = from_onnx(path)
    assert [(layer.type, layer.name) for layer in arch] == [
        ("embedding", "wte"), ("embedding", "wpe"), ("add", "add_pos"), ("layernorm", "ln_1"), ("linear", "q"),
        ("linear", "k"), ("linear", "v"), ("attention", "attn"), ("gelu", "gelu"), ("matmul", "lm_head")]
    wte, wpe = arch[0], arch[1]
    assert (wte.tokens, wte.in_features, wte.out_features, wpe.tokens, wpe.in_features) == (6, 20, 8, 6, 16)
    att = arch[7]
    assert (att.causal, att.heads, att.tokens, att.head_dim) == (1, 2, 6, 4)
    assert arch[8].approximate == 1
    head = arch[9]  # the table (held by wte) transposed: a product with one shared matrix, no parameters
    assert (head.broadcast, head.tokens, head.in_features, head.out_features) == (1, 6, 8, 20)
    assert arch.batch == 3 and arch.dtype == "fp32" and "params_outside_layers" not in arch.meta
    assert arch.totals()["params"] == 20 * 8 + 16 * 8 + 2 * 8 + 3 * 8 * 8


def test_onnx_decomposed_layernorm_channels_first_and_upsampling(tmp_path: Path) -> None:
    """LayerNorm2d as opset 14 exports it (between channels-last transposes), ConvTranspose, Resize, Softmax."""
    c = 4
    inits = [
        _const("last", [-1]), onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        onnx.numpy_helper.from_array(np.array(1e-6, np.float32), "eps"), shape_only("ln.s", [c]),
        shape_only("ln.b", [c]), shape_only("up.w", [c, 6, 3, 3]), shape_only("up.b", [6]),
        onnx.numpy_helper.from_array(np.array([], np.float32), "roi"),
        onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        _const("size", [1, 6, 30, 30]),
    ]
    n = helper.make_node
    nodes = [
        n("Transpose", ["x"], ["xl"], perm=[0, 2, 3, 1]),
        n("ReduceMean", ["xl", "last"], ["mu"], "norm"), n("Sub", ["xl", "mu"], ["d"]),
        n("Pow", ["d", "two"], ["d2"]), n("ReduceMean", ["d2", "last"], ["var"]), n("Add", ["var", "eps"], ["ve"]),
        n("Sqrt", ["ve"], ["sd"]), n("Div", ["d", "sd"], ["z"]), n("Mul", ["z", "ln.s"], ["zs"]),
        n("Add", ["zs", "ln.b"], ["zb"]), n("Transpose", ["zb"], ["y"], perm=[0, 3, 1, 2]),
        n("ConvTranspose", ["y", "up.w", "up.b"], ["u"], "up", strides=[2, 2], pads=[1, 1, 1, 1],
          output_padding=[1, 1], kernel_shape=[3, 3]),
        n("Resize", ["u", "roi", "scales"], ["r"], "nearest", mode="nearest"),
        n("Resize", ["r", "", "", "size"], ["r2"], "bilinear", mode="linear"),
        n("Softmax", ["r2"], ["out"], "softmax", axis=-1),
    ]
    path = tmp_path / "ln.onnx"
    onnx.save(_model(nodes, inits, [1, c, 5, 5]), path)
    arch = from_onnx(path)
    assert [layer.type for layer in arch] == ["layernorm", "conv_transpose2d", "upsample", "upsample", "softmax"]
    ln, up, near, bilinear, softmax = arch
    assert (ln.channels_first, ln.tokens, ln.in_features, ln.name) == (1, 25, 4, "norm")
    assert up.out_shape == (1, 6, 10, 10) and up.output_padding == (1, 1) and up.params == 4 * 6 * 9 + 6
    assert (near.interpolation, near.out_h, bilinear.interpolation, bilinear.out_w) == (0, 20, 1, 30)
    assert (softmax.channels_first, softmax.in_channels, softmax.in_h) == (0, 30, 6 * 30)
    assert arch.totals()["params"] == 8 + 4 * 6 * 9 + 6


def test_onnx_unsupported_pattern_is_one_line(tmp_path: Path) -> None:
    inits = [onnx.numpy_helper.from_array(np.array(3.0, np.float32), "three")]
    nodes = [helper.make_node("Erf", ["x"], ["e"], "erf"), helper.make_node("Mul", ["e", "three"], ["y"], "scale")]
    path = tmp_path / "erf.onnx"
    onnx.save(_model(nodes, inits, [1, 4, 3, 3]), path)
    with pytest.raises(InputError) as info:
        from_onnx(path)
    assert "erf (Erf)" in str(info.value) and "\n" not in str(info.value)
    arch = from_onnx(path, allow_unknown=True)
    assert [(layer.type, layer.broadcast) for layer in arch] == [("mul", 1)]  # a scalar operand
