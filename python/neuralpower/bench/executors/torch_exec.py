"""The ``torch`` executor: PyTorch modules on a CUDA device, as users run them (cuDNN and cuBLAS included).

A layer becomes the module a user would write (``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.Linear`` (on vectors or
token tensors), ``nn.MaxPool2d(ceil_mode=...)``, ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.BatchNorm2d`` in
eval mode, ``nn.LayerNorm`` (channels-first: torchvision's ConvNeXt ``LayerNorm2d``, a permute, ``F.layer_norm``
and a permute back), the activation modules (``nn.GELU(approximate=...)``, ``nn.Tanh``), ``nn.Softmax(dim=1)``
(``dim=-1`` for the last axis), ``nn.Flatten``, ``nn.Embedding``, ``nn.Upsample`` (``F.interpolate``), and small
modules for add, mul, concat, torchvision's channel shuffle, ``torch.matmul`` and
``F.scaled_dot_product_attention(is_causal=...)``), in the layer's dtype (fp32, fp16 or bf16), with random weights
and inputs, run under ``torch.inference_mode()``. PyTorch's defaults are kept and recorded in
:meth:`TorchExecutor.context` (TF32 convolutions, full-precision fp32 matmuls); ``torch.backends.cudnn.benchmark``
is switched on, so a warm-up call picks each configuration's fastest algorithm before anything is timed.

Variants: ``eager`` (one Python call of the module per call) and ``graph`` (calls captured in a
``torch.cuda.CUDAGraph`` and replayed), each in ``contiguous`` (NCHW) memory format and, when
``channels_last`` is set, also ``channels_last`` for 4-D layers. Times come from ``torch.cuda.Event`` pairs on
the current stream.

Whole networks: an architecture that is a torchvision network of neuralpower's zoo (its layers equal to
``zoo.build(name, ...)`` at its batch, resolution and dtype) runs as ``torchvision.models.<name>(weights=None)``
in eval mode; any other architecture runs its layers' modules in order, each reading the previous layer's
output when the shapes match and an input of its own otherwise (as the ``cupy`` executor does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError
from ...layers import Architecture, Layer
from .. import reference
from .base import Executor, ExecutorUnavailable, LayerFailed, OutOfMemory, Prepared, Variant, unsupported
from .cupy_exec import (
    GRAPH_CALLS,
    compare_with_reference,
    first_line,
    nvidia_driver_version,
    parse_cuda_device,
    release_frames,
    small_layer,
)

__all__ = ["TorchExecutor", "import_torch", "layer_module"]

_MODES = ("eager", "graph")
_FORMATS = ("contiguous", "channels_last")
_TORCH_DTYPES = ("fp32", "fp16", "bf16")
_WARMUP_CALLS = 3
_SEED = 20240611


def import_torch() -> Any:
    """PyTorch, or :class:`ExecutorUnavailable` saying which extra to install."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise ExecutorUnavailable(f"the torch executor needs PyTorch ({e}): pip install 'neuralpower[torch]'") from None
    return torch


def _torch_dtype(torch: Any, dtype: str) -> Any:
    if dtype not in _TORCH_DTYPES:  # fp8: PyTorch's float8 types are for scaled matmuls, not its modules
        raise LayerFailed(f"the torch executor runs {', '.join(_TORCH_DTYPES)}, not {dtype}")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


@functools.cache
def _small_modules(torch: Any) -> dict[str, Any]:
    """Modules for the layer types PyTorch writes as expressions rather than modules."""
    module: Any = torch.nn.Module

    class Add(module):  # type: ignore[misc, unused-ignore]
        """``x0 + x1 + ...`` (later operands may be N x C x 1 x 1)."""

        def forward(self, *xs: Any) -> Any:
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

    class Mul(module):  # type: ignore[misc, unused-ignore]
        """``x0 * x1 * ...`` (squeeze-and-excitation's scaling when later operands are N x C x 1 x 1)."""

        def forward(self, *xs: Any) -> Any:
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out

    class Cat(module):  # type: ignore[misc, unused-ignore]
        """``torch.cat(xs, dim=1)``."""

        def forward(self, *xs: Any) -> Any:
            return torch.cat(xs, dim=1)

    class ChannelShuffle(module):  # type: ignore[misc, unused-ignore]
        """torchvision's ``channel_shuffle`` (ShuffleNetV2): view, transpose, contiguous, view."""

        def __init__(self, groups: int) -> None:
            super().__init__()
            self.groups = groups

        def forward(self, x: Any) -> Any:
            n, c, h, w = x.shape
            x = x.view(n, self.groups, c // self.groups, h, w)
            return torch.transpose(x, 1, 2).contiguous().view(n, c, h, w)

    class MatMul(module):  # type: ignore[misc, unused-ignore]
        """``torch.matmul(a, b)`` (batched; a 2-D ``b`` is broadcast)."""

        def forward(self, a: Any, b: Any) -> Any:
            return torch.matmul(a, b)

    class Attention(module):  # type: ignore[misc, unused-ignore]
        """``F.scaled_dot_product_attention(q, k, v, is_causal=causal)`` (PyTorch picks its kernel: flash,
        memory-efficient, cuDNN or the math fallback)."""

        def __init__(self, causal: bool) -> None:
            super().__init__()
            self.causal = causal

        def forward(self, q: Any, k: Any, v: Any) -> Any:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)

    class LayerNormChannelsFirst(torch.nn.LayerNorm):  # type: ignore[misc, unused-ignore]
        """torchvision's ConvNeXt ``LayerNorm2d`` for any rank: channels moved last (a permute, a view),
        ``F.layer_norm`` over them, moved back."""

        def forward(self, x: Any) -> Any:
            x = x.movedim(1, -1)
            x = torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.movedim(-1, 1)

    return {
        "add": Add,
        "mul": Mul,
        "concat": Cat,
        "channel_shuffle": ChannelShuffle,
        "matmul": MatMul,
        "attention": Attention,
        "layernorm_channels_first": LayerNormChannelsFirst,
    }


def layer_module(torch: Any, layer: Layer, device: Any = None, dtype: Any = None) -> Any:
    """The ``torch.nn.Module`` of a layer, with PyTorch's default initialization, its parameters created on
    ``device`` in ``dtype`` (default: the CPU, float32)."""
    nn = torch.nn
    t = layer.type
    reason = unsupported(layer, "torch", _TORCH_DTYPES)
    if reason is not None:
        raise LayerFailed(reason)
    where = {"device": device, "dtype": dtype}
    if t == "conv2d":
        return nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            bias=bool(layer.bias),
            **where,
        )
    if t == "conv_transpose2d":
        return nn.ConvTranspose2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            layer.padding,
            layer.output_padding,
            layer.groups,
            bias=bool(layer.bias),
            dilation=layer.dilation,
            **where,
        )
    if t == "linear":  # on [N, in] or [N, tokens, in] alike
        return nn.Linear(layer.in_features, layer.out_features, bias=bool(layer.bias), **where)
    if t == "layernorm":
        if layer.channels_first:
            return _small_modules(torch)["layernorm_channels_first"](layer.in_features, eps=reference.LN_EPS, **where)
        return nn.LayerNorm(layer.in_features, eps=reference.LN_EPS, **where)
    if t == "embedding":
        return nn.Embedding(layer.in_features, layer.out_features, **where)
    if t == "upsample":
        if layer.interpolation:
            return nn.Upsample(size=(layer.out_h, layer.out_w), mode="bilinear", align_corners=False)
        return nn.Upsample(size=(layer.out_h, layer.out_w), mode="nearest")
    if t == "gelu":
        return nn.GELU(approximate="tanh" if layer.approximate else "none")
    if t == "maxpool2d":
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding, layer.dilation, ceil_mode=bool(layer.ceil_mode))
    if t == "avgpool2d":  # count_include_pad=True, PyTorch's default
        return nn.AvgPool2d(layer.kernel, layer.stride, layer.padding, ceil_mode=bool(layer.ceil_mode))
    if t == "adaptive_avgpool2d":
        return nn.AdaptiveAvgPool2d((layer.out_h, layer.out_w))
    if t == "batchnorm2d":
        return nn.BatchNorm2d(layer.in_channels, eps=reference.BN_EPS, **where)
    simple = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "sigmoid": nn.Sigmoid,
        "hardsigmoid": nn.Hardsigmoid,
        "silu": nn.SiLU,
        "hardswish": nn.Hardswish,
        "tanh": nn.Tanh,
        "flatten": nn.Flatten,
    }
    if t in simple:
        return simple[t]()
    if t == "softmax":  # over channels of N x C x H x W, or the last axis of N x H x W x C
        return nn.Softmax(dim=1 if layer.channels_first else -1)
    small = _small_modules(torch)
    if t == "channel_shuffle":
        return small[t](layer.groups)
    if t == "attention":
        return small[t](bool(layer.causal))
    if t in small:
        return small[t]()
    raise LayerFailed(f"no PyTorch module for layer type {t!r}")  # pragma: no cover - every type is above


def has_image_layout(layer: Layer) -> bool:
    """Whether a layer's tensors are N x C x H x W images, which ``channels_last`` can lay out NHWC (not token
    tensors, vectors, indices, or a last-axis softmax's N x H x W x C)."""
    if layer.type in ("linear", "flatten", "layernorm", "matmul", "attention", "embedding"):
        return False
    return not (layer.type == "softmax" and not layer.channels_first)


def _uniform(torch: Any, shape: Sequence[int], dtype: str, gen: Any, device: Any, low: float, high: float) -> Any:
    x = torch.empty(tuple(shape), device=device, dtype=torch.float32)
    x.uniform_(low, high, generator=gen)
    return x.to(_torch_dtype(torch, dtype))


def module_and_inputs(torch: Any, layer: Layer, device: Any, memory_format: str, gen: Any) -> tuple[Any, list[Any]]:
    """The layer's module on ``device`` with random parameters (batchnorm: random running statistics too), and
    random inputs (embedding: int64 indices in the vocabulary), in the layer's dtype and ``memory_format``;
    ``gen`` is a ``torch.Generator`` on ``device``."""
    dt = _torch_dtype(torch, layer.dtype)
    module = layer_module(torch, layer, device, dt).eval().to(device=device, dtype=dt)
    if layer.type == "batchnorm2d":  # as (reference.make_operands), so that outputs stay of order one
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
    if layer.type == "embedding":
        shape = reference.input_shapes(layer)[0]
        inputs = [torch.randint(0, layer.in_features, shape, generator=gen, device=device, dtype=torch.int64)]
    else:
        shapes = reference.input_shapes(layer)
        inputs = [_uniform(torch, shape, layer.dtype, gen, device, -1.0, 1.0) for shape in shapes]
    if memory_format == "channels_last":
        module = module.to(memory_format=torch.channels_last)
        inputs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs]
    return module, inputs


def run_module(torch: Any, layer: Layer, ops: reference.Operands, device: Any) -> tuple[Any, reference.Operands]:
    """Run the layer's module on ``device`` with the given operands and parameters (rounded to the layer's
    dtype; embedding indices as they are); its output as a float64-ready NumPy array, and the operands
    exactly as PyTorch saw them (for the reference)."""
    dt = _torch_dtype(torch, layer.dtype)

    def tensor(x: Any) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(device=device) if t.dtype == torch.int64 else t.to(device=device, dtype=dt)

    def host(t: Any) -> Any:
        return t.cpu().numpy() if t.dtype == torch.int64 else t.float().cpu().numpy()

    with torch.no_grad():
        module = layer_module(torch, layer, device, dt).eval().to(device=device, dtype=dt)
        params = {k: tensor(v) for k, v in ops.params.items()}
        for name, value in params.items():
            getattr(module, name).copy_(value)  # parameters and running statistics alike
        inputs = [tensor(x) for x in ops.inputs]
    with torch.inference_mode():
        actual = module(*inputs).float().cpu().numpy()
    rounded = reference.Operands([host(x) for x in inputs], {k: host(v) for k, v in params.items()})
    return actual, rounded


def check_module(torch: Any, layer: Layer, device: Any) -> None:
    """Run ``layer``'s module on ``device`` on the reference's operands (see :func:`run_module`) and compare
    with :func:`reference.forward`. fp32 convolutions (cuDNN) and matmuls that PyTorch runs in TF32 are held
    to TF32's precision.

    Raises
    ------
    AssertionError
    """
    ops = reference.make_operands(layer, np.random.default_rng(abs(hash(layer.row)) % 2**32), dtype=np.float32)
    actual, rounded = run_module(torch, layer, ops, device)
    expected = reference.forward(layer, rounded)
    on_gpu = torch.device(device).type == "cuda"
    tf32 = (
        on_gpu
        and layer.dtype == "fp32"
        and (
            (layer.type in ("conv2d", "conv_transpose2d") and torch.backends.cudnn.allow_tf32)
            or (layer.type in ("linear", "matmul", "attention") and torch.backends.cuda.matmul.allow_tf32)
        )
    )
    tolerance_dtype = "fp16" if tf32 else layer.dtype  # TF32 keeps fp16's 10-bit mantissa
    compare_with_reference(actual, expected, layer, tolerance_dtype)


@dataclass
class TorchExecutor(Executor):
    """PyTorch on ``cuda:N``.

    Attributes
    ----------
    channels_last
        Also measure the ``channels_last`` variants of 4-D layers (``prepare`` accepts them either way).

    Raises
    ------
    ExecutorUnavailable
        PyTorch is not installed (the message names the extra), sees no such CUDA device, or ``dtype`` is not
        fp32, fp16 or bf16.
    """

    device: str = "cuda:0"
    dtype: str = "fp32"
    name: str = field(init=False, default="torch")
    channels_last: bool = False

    def __post_init__(self) -> None:
        index = parse_cuda_device(self.device, "torch")
        torch = import_torch()
        if not torch.cuda.is_available():
            raise ExecutorUnavailable("PyTorch sees no CUDA device for the torch executor")
        count = torch.cuda.device_count()
        if index >= count:
            raise ExecutorUnavailable(f"no CUDA device {index} for the torch executor ({count} found)")
        if self.dtype not in _TORCH_DTYPES:
            raise ExecutorUnavailable(f"the torch executor runs {', '.join(_TORCH_DTYPES)}, not {self.dtype}")
        # As users run inference: cuDNN picks each shape's fastest algorithm (in the warm-up calls).
        torch.backends.cudnn.benchmark = True
        self._torch = torch
        self._index = index
        self._dev = torch.device("cuda", index)
        self._props = torch.cuda.get_device_properties(index)
        self._checked: set[tuple[tuple[int, ...], str]] = set()

    # -- description ----------------------------------------------------------------------------------
    def context(self) -> Mapping[str, Any]:
        """``executor``, ``device``, ``gpu`` (name), ``gpu_uuid``, ``driver`` (the NVIDIA driver), ``cuda``
        (PyTorch's CUDA), ``compute_capability``, ``torch`` and ``cudnn`` versions, and the settings that
        change what runs: ``cudnn_benchmark``, ``conv_tf32``, ``matmul_tf32``."""
        torch = self._torch
        props = self._props
        try:
            raw = str(props.uuid)
            gpu_uuid = raw if raw.startswith("GPU-") else f"GPU-{raw}"
        except Exception:  # older PyTorch without uuid
            gpu_uuid = ""
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {
            "executor": self.name,
            "device": f"cuda:{self._index}",
            "gpu": str(props.name),
            "gpu_uuid": gpu_uuid,
            "driver": nvidia_driver_version(),
            "cuda": str(torch.version.cuda or ""),
            "compute_capability": f"{props.major}.{props.minor}",
            "torch": str(torch.__version__),
            "cudnn": "" if cudnn is None else str(cudnn),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "conv_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        }

    def supports(self, layer: Layer) -> bool:
        return unsupported(layer, self.name, _TORCH_DTYPES) is None

    def l2_bytes(self) -> int:
        return int(getattr(self._props, "L2_cache_size", 0))

    def variants(self, layer: Layer) -> list[Variant]:
        formats = ["contiguous"]
        if self.channels_last and has_image_layout(layer):
            formats.append("channels_last")
        modes = ("eager",) if layer.type == "flatten" else _MODES  # a view: no kernel to capture
        return [Variant(mode=mode, memory_format=fmt) for fmt in formats for mode in modes]

    # -- preparing work -------------------------------------------------------------------------------
    def prepare(self, layer: Layer, variant: Variant) -> Prepared:
        """A layer's module on random device data.

        Raises
        ------
        OutOfMemory, LayerFailed
        """
        self._check_variant(variant)
        torch = self._torch
        # Modules are built outside inference mode (parameters must not be inference tensors) but without
        # autograd; only the calls run under torch.inference_mode().
        with self._errors(f"preparing {layer!r}"), torch.cuda.device(self._index), torch.no_grad():
            gen = torch.Generator(device=self._dev)
            gen.manual_seed(_SEED)
            module, inputs = self._module_and_inputs(layer, variant.memory_format, gen)
            # Flatten of a contiguous tensor is a view: it launches no kernel, and capturing nothing would
            # make an empty graph (PyTorch warns), so it always runs as in eager mode.
            mode = "eager" if layer.type == "flatten" else variant.mode
            return _TorchPrepared(self, functools.partial(module, *inputs), mode, [layer], GRAPH_CALLS, module)

    def prepare_network(self, arch: Architecture, variant: Variant) -> Prepared:
        """The torchvision network of the same name when the architecture is that zoo network, else the layers'
        modules in order.

        Raises
        ------
        OutOfMemory, LayerFailed
        """
        self._check_variant(variant)
        torch = self._torch
        with self._errors(f"preparing network {arch.name!r}"), torch.cuda.device(self._index), torch.no_grad():
            gen = torch.Generator(device=self._dev)
            gen.manual_seed(_SEED)
            model = self._torchvision_model(arch)
            if model is not None:
                model = model.eval().to(device=self._dev, dtype=_torch_dtype(torch, arch.dtype))
                x = self._uniform(arch.layers[0].in_shape, arch.dtype, gen)
                if variant.memory_format == "channels_last":
                    model = model.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                return _TorchPrepared(self, functools.partial(model, x), variant.mode, [], 1, model)
            steps: list[tuple[Any, list[Any], bool]] = []
            previous: tuple[int, ...] | None = None
            try:
                for layer in arch:
                    module, inputs = self._module_and_inputs(layer, variant.memory_format, gen)
                    # embedding reads indices of its own, never the previous layer's (float) output
                    chain = layer.type != "embedding" and previous is not None and tuple(inputs[0].shape) == previous
                    steps.append((module, inputs, chain))
                    previous = tuple(layer.out_shape)
            except BaseException:
                # The traceback keeps this frame: free the layers allocated so far now (out of memory).
                steps.clear()
                module = inputs = None
                raise
            distinct = list({layer.row: layer for layer in arch}.values())
            return _TorchPrepared(self, functools.partial(_run_chain, steps), variant.mode, distinct, 1, steps)

    def _check_variant(self, variant: Variant) -> None:
        if variant.mode not in _MODES:
            raise LayerFailed(f"the torch executor's modes are {', '.join(_MODES)}, not {variant.mode!r}")
        if variant.memory_format not in _FORMATS:
            raise LayerFailed(
                f"the torch executor's memory formats are {', '.join(_FORMATS)}, not {variant.memory_format!r}"
            )
        if variant.impl:
            raise LayerFailed(f"the torch executor has one implementation per layer, not {variant.impl!r}")

    def _uniform(self, shape: Sequence[int], dtype: str, gen: Any, low: float = -1.0, high: float = 1.0) -> Any:
        return _uniform(self._torch, shape, dtype, gen, self._dev, low, high)

    def _module_and_inputs(self, layer: Layer, memory_format: str, gen: Any) -> tuple[Any, list[Any]]:
        return module_and_inputs(self._torch, layer, self._dev, memory_format, gen)

    def _torchvision_model(self, arch: Architecture) -> Any:
        """``torchvision.models.<name>(weights=None)`` when ``arch`` is that zoo network, else ``None``."""
        from ... import zoo

        if arch.name not in zoo.names():
            return None
        entry = next(e for e in zoo.entries() if e.name == arch.name)
        first = arch.layers[0]
        if not entry.source.startswith("torchvision") or first.in_h != first.in_w:
            return None
        try:
            built = zoo.build(arch.name, batch=arch.batch, image_size=first.in_h, dtype=arch.dtype)
        except InputError:
            return None
        if not np.array_equal(built.rows(), arch.rows()):
            return None
        try:
            import torchvision  # type: ignore[import-not-found, unused-ignore]
        except ImportError as e:
            raise ExecutorUnavailable(f"running {arch.name} needs torchvision ({e}): pip install torchvision") from None
        kwargs: dict[str, Any] = {"weights": None}
        if arch.name in ("googlenet", "inception_v3"):
            kwargs["init_weights"] = False  # skips a slow initialization and its FutureWarning; weights are random
        with self._torch.device(self._dev):  # parameters created (and initialized) on the GPU
            return torchvision.models.get_model(arch.name, **kwargs)

    # -- checks ---------------------------------------------------------------------------------------
    def check_layer(self, layer: Layer) -> None:
        """Run the layer's module (on a copy shrunk by :func:`~.cupy_exec.small_layer`) on the reference's
        operands, rounded to the layer's dtype, and compare with :func:`reference.forward`; remembered once
        passed. fp32 convolutions and matmuls that PyTorch runs in TF32 are held to TF32's precision.

        Raises
        ------
        AssertionError, OutOfMemory, LayerFailed
        """
        key = (layer.row, "")
        if key in self._checked:
            return
        with self._errors(f"checking {layer!r}"), self._torch.cuda.device(self._index):
            check_module(self._torch, small_layer(layer), self._dev)
        self._checked.add(key)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """PyTorch's out-of-memory error as :class:`OutOfMemory`, its other runtime errors (CUDA, cuDNN,
        cuBLAS, unsupported configurations) as :class:`LayerFailed`, on one line."""
        torch = self._torch
        try:
            yield
        except torch.cuda.OutOfMemoryError as e:
            release_frames(e)
            torch.cuda.empty_cache()
            raise OutOfMemory(f"{what}: {first_line(e)}") from e
        except RuntimeError as e:
            raise LayerFailed(f"{what}: {first_line(e)}") from e


def _run_chain(steps: Sequence[tuple[Any, list[Any], bool]]) -> Any:
    """One inference of a composed network: each module reads the previous output where it chains."""
    out = None
    for module, inputs, chain in steps:
        out = module(out, *inputs[1:]) if chain else module(*inputs)
    return out


class _TorchPrepared(Prepared):
    """A zero-argument forward, CUDA events, and the captured graphs (sharing one memory pool)."""

    def __init__(
        self,
        executor: TorchExecutor,
        forward: Callable[[], Any],
        mode: str,
        checks: list[Layer],
        graph_calls: int,
        keep: Any,
    ) -> None:
        torch = executor._torch
        self._x = executor
        self._torch = torch
        self._forward: Callable[[], Any] | None = forward
        self._mode = mode
        self._checks = checks
        self._graph_calls = graph_calls
        self._keep = keep
        self._out: Any = None
        self._graphs: dict[int, Any] = {}
        self._pool: Any = None
        self._warm = False
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    @contextmanager
    def _on_device(self, what: str) -> Iterator[None]:
        if self._forward is None:
            raise LayerFailed("the workload was released")
        torch = self._torch
        with self._x._errors(what), torch.cuda.device(self._x._index), torch.inference_mode():
            yield

    def _call(self) -> None:
        assert self._forward is not None
        self._out = self._forward()

    def _warm_up(self) -> None:
        """A few calls on a side stream (PyTorch's recipe before graph capture): cuDNN's algorithm search,
        cuBLAS handles and workspaces happen here, not in a timing or a capture."""
        if self._warm:
            return
        torch = self._torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_CALLS):
                self._call()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self._warm = True

    def _graph(self, calls: int) -> Any:
        graph = self._graphs.get(calls)
        if graph is None:
            torch = self._torch
            self._warm_up()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                for _ in range(calls):
                    self._call()
            if self._pool is None:
                self._pool = graph.pool()
            graph.replay()  # the first replay uploads the graph: keep it out of timings
            torch.cuda.synchronize()
            self._graphs[calls] = graph
        return graph

    def run(self) -> None:
        with self._on_device("running"):
            if self._mode == "graph":
                self._graph(1).replay()
            else:
                self._call()

    def _graphs_for(self, calls: int) -> list[Any]:
        """The captured graphs that make ``calls`` calls: full ones of ``graph_calls`` and one for the rest."""
        full, rest = divmod(calls, self._graph_calls)
        return ([self._graph(self._graph_calls)] * full if full else []) + ([self._graph(rest)] if rest else [])

    def run_calls(self, calls: int) -> None:
        with self._on_device("running"):
            if self._mode == "graph":
                for graph in self._graphs_for(calls):
                    graph.replay()
            else:
                self._warm_up()
                for _ in range(calls):
                    self._call()

    def time_calls(self, calls: int) -> float:
        if calls < 1:
            raise ValueError(f"calls must be at least 1, not {calls}")
        with self._on_device("timing"):
            if self._mode == "graph":
                graphs = self._graphs_for(calls)
                self._start.record()
                for graph in graphs:
                    graph.replay()
                self._end.record()
            else:
                self._warm_up()
                self._start.record()
                for _ in range(calls):
                    self._call()
                self._end.record()
            self._end.synchronize()
            return float(self._start.elapsed_time(self._end)) / calls

    def synchronize(self) -> None:
        with self._on_device("synchronizing"):
            self._torch.cuda.synchronize()

    def check(self) -> None:
        for layer in self._checks:
            self._x.check_layer(layer)

    def release(self) -> None:
        if self._forward is None:
            return
        torch = self._torch
        with torch.cuda.device(self._x._index):
            torch.cuda.synchronize()
            self._graphs.clear()
            self._pool = None
            self._forward = None
            self._keep = None
            self._out = None
            torch.cuda.empty_cache()
