"""Inference kernels written once against an array module ``xp`` (NumPy or CuPy): the executor's runtime.

Generated executor modules call these as ``rt.<kernel>``. Every function takes and returns
NCHW arrays of the caller's library; nothing imports CuPy unless it is installed. Kernels
that the executor calls in its hot loop accept ``out=`` (and, for convolution, a
:class:`ConvPlan`) so that a compiled network runs its forward pass without allocating.
Each concern lives in its own module; this one gathers them:

* :mod:`.arrays`: the array module, CPU threads, scratch sizing;
* :mod:`.conv`: convolution and fully connected;
* :mod:`.attention`: scaled dot-product and multi-head self-attention, Swin's and MaxViT's biases;
* :mod:`.pool`: pooling;
* :mod:`.norm`: normalisation;
* :mod:`.language`: token embeddings, positions, RMS normalisation, rotary embeddings;
* :mod:`.elementwise`: epilogues and arithmetic;
* every op's xp kernel (:class:`~alexdsl.ops.lowering.XpKernel`: the activations, softmax, the arithmetic),
  under its name;
* :mod:`.channels`: concat, channel shuffle;
* :mod:`.tokens`: tensors of any rank (rearrange, select, linear and layer norm over the last axis).
* :mod:`.resample`: padding, upsampling, reductions over axes.

>>> import numpy as np
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> max_pool2d(x, (2, 2), (2, 2), (0, 0)).tolist()
[[[[5.0, 7.0], [13.0, 15.0]]]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alexdsl.backends.executor.arrays import (  # noqa: F401 - the runtime's names
    Activation,
    Array,
    array_module,
    as_pair,
    as_strided,
    blas_one_thread,
    gemm_layout,
    num_threads,
    parallel_for,
    scratch_rows,
    thread_pool,
)
from alexdsl.backends.executor.attention import (  # noqa: F401 - the runtime's names
    attention,
    cached_sdpa,
    copy_constant,
    relative_position_bias,
    sdpa,
    shifted_window_mask,
)
from alexdsl.backends.executor.channels import (  # noqa: F401 - the runtime's names
    channel_shuffle,
    concat,
)
from alexdsl.backends.executor.compiled import with_compiled
from alexdsl.backends.executor.conv import (  # noqa: F401 - the runtime's names
    ConvPlan,
    bias_relu_,
    conv2d,
    fold_affine,
    fold_batchnorm,
    linear,
    pretranspose,
    transpose_bias_relu,
)
from alexdsl.backends.executor.elementwise import (  # noqa: F401 - the runtime's names
    activate,
    add,
    divide,
    multiply,
    subtract,
)
from alexdsl.backends.executor.language import (  # noqa: F401 - the runtime's names
    embedding,
    positions,
    repeat_kv,
    rms_norm,
    rope,
    rope_table,
    unembed,
)
from alexdsl.backends.executor.norm import (  # noqa: F401 - the runtime's names
    batchnorm_affine,
    channel_affine,
    group_norm,
    layer_norm,
    lrn,
)
from alexdsl.backends.executor.pool import (  # noqa: F401 - the runtime's names
    PoolPlan,
    adaptive_avg_pool2d,
    adaptive_matrices,
    avg_pool2d,
    global_avg_pool2d,
    max_pool2d,
)
from alexdsl.backends.executor.resample import (  # noqa: F401 - the runtime's names
    bilinear_matrices,
    pad2d,
    reduce,
    upsample_bilinear,
    upsample_nearest,
)
from alexdsl.backends.executor.tokens import (  # noqa: F401 - the runtime's names
    broadcast_batch,
    layer_norm_last,
    linear_last,
    matmul,
    rearrange,
    roll,
    select,
)
from alexdsl.ops.registry import all_ops, lookup


def _declared_kernels() -> dict[str, Callable[..., Array]]:
    """The xp kernel each registered op declares (``Lowerings.kernel``), by the name generated code calls it by."""
    return {op.lower.kernel.name: with_compiled(op.lower.kernel) for op in all_ops() if op.lower.kernel is not None}


globals().update(_declared_kernels())  # rt.relu, rt.gelu, ...: the generated modules' calls


def op_function(name: str) -> Callable[..., Array]:
    """The xp function a registered op (a plugin's) declares for the executor."""
    op = lookup(name)
    function = op.lower.executor.function if op is not None and op.lower.executor is not None else None
    if function is None:
        raise ValueError(f"op {name!r} declares no executor function")
    return function


def __getattr__(name: str) -> Any:
    """``rt.<op>``: the xp ``function`` a registered op (a plugin's) declares, so that a producer can apply a
    plugin's elementwise op as its epilogue (``act=rt.<op>``) as it applies the built-in ones; or the kernel a
    plugin registered after this module loaded declares."""
    kernel = _declared_kernels().get(name)
    if kernel is not None:
        return kernel
    try:
        return op_function(name)
    except ValueError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
