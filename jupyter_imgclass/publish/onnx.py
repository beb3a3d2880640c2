"""ONNX export of a trained classifier, by translating its traced JAX program.

The network's inference function (preprocessing, forward pass in eval mode, softmax or
sigmoid) is traced with ``jax.make_jaxpr`` for a symbolic batch size, and every JAX
primitive of the resulting program is written as ONNX operators (``Conv`` for
``conv_general_dilated`` including grouped/depthwise ones, ``MaxPool`` for max pooling,
``Einsum``/``MatMul`` for ``dot_general``, element-wise maths for batch norm, ``Slice``
for the shifted depthwise convolutions, ...). Sub-programs whose inputs are all known
(weights, literals) are computed once here and stored as initializers. The translation
is network-agnostic: anything built from the supported primitives exports, and an
unsupported primitive fails with a clear :class:`BundleError` naming it.

The ONNX model's contract (also written into ``model.json`` under ``onnx``):

* input ``image``: float32 ``[batch, size, size, 3]``, RGB, values in ``[0, 255]``
  (a uint8 image cast to float), already resized to the network's input size;
  normalisation (``x / 255``, ``mean``, ``std``) happens inside the graph;
* output ``probabilities``: float32 ``[batch, tags]`` (softmax for multiclass,
  sigmoid for multilabel), columns in tag order.

Example::

    import onnxruntime as ort

    session = ort.InferenceSession("bundle/model.onnx")
    session.run(["probabilities"], {"image": batch_uint8.astype("float32")})[0]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import DEFAULT_RESIZE, check_resize, describe_resize
from ..data.integrity import atomic_write
from ..errors import BundleError

__all__ = ["OPSET", "export_onnx", "function_to_onnx", "onnx_predict"]

OPSET = 17
_INT64_MAX = np.iinfo(np.int64).max


class _Unsupported(Exception):
    pass


class _Translator:
    """Walks a jaxpr and emits ONNX nodes; constants are folded with JAX itself."""

    def __init__(self, batch_symbol: Any):
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._counter = 0
        self._batch_symbol = batch_symbol
        self._batch_tensor: str | None = None
        self.input_name = "image"

    # -- names and constants -------------------------------------------------------

    def fresh(self, hint: str = "t") -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def const(self, value: Any, hint: str = "c") -> str:
        from onnx import numpy_helper

        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outs, **attrs))
        return outs

    def one(self, op: str, inputs: list[str], **attrs: Any) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    # -- shapes with a symbolic batch -------------------------------------------------

    def _is_int(self, d: Any) -> bool:
        return isinstance(d, (int, np.integer))

    def batch(self) -> str:
        if self._batch_tensor is None:
            shape = self.one("Shape", [self.input_name])
            self._batch_tensor = self.one(
                "Slice", [shape, self.const(np.array([0])), self.const(np.array([1]))]
            )
        return self._batch_tensor

    def shape_tensor(self, dims: tuple) -> str:
        if all(self._is_int(d) for d in dims):
            return self.const(np.array([int(d) for d in dims], dtype=np.int64), "shape")
        pieces = []
        for d in dims:
            if self._is_int(d):
                pieces.append(self.const(np.array([int(d)], dtype=np.int64)))
            elif str(d) == str(self._batch_symbol):
                pieces.append(self.batch())
            else:
                raise _Unsupported(f"symbolic dimension {d!r} (only the batch may vary)")
        return self.one("Concat", pieces, axis=0)

    # -- the walk -----------------------------------------------------------------------

    def value(self, env: dict, var: Any) -> Any:
        from jax.extend.core import Literal

        if isinstance(var, Literal):
            return ("const", np.asarray(var.val))
        return env[var]

    def tensor(self, item: Any, like_dtype: Any = None) -> str:
        kind, v = item
        if kind == "tensor":
            return v
        array = np.asarray(v)
        if like_dtype is not None:
            array = array.astype(like_dtype)
        return self.const(array)

    def run(self, jaxpr: Any, consts: list[Any], inputs: list[Any]) -> list[Any]:
        env: dict = dict(zip(jaxpr.constvars, consts, strict=True))
        env.update(zip(jaxpr.invars, inputs, strict=True))
        for eqn in jaxpr.eqns:
            args = [self.value(env, v) for v in eqn.invars]
            outs = self.eqn(eqn, args)
            for var, out in zip(eqn.outvars, outs, strict=True):
                env[var] = out
        return [self.value(env, v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, args: list[Any]) -> list[Any]:
        name = eqn.primitive.name
        params = eqn.params
        sub = params.get("jaxpr") or params.get("call_jaxpr") or params.get("fun_jaxpr")
        if sub is not None and name not in ("cond", "while", "scan"):
            inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            consts = [("const", np.asarray(c)) for c in getattr(sub, "consts", [])]
            return self.run(inner, consts, args)
        if all(kind == "const" for kind, _ in args):
            return self.fold(eqn, [v for _, v in args])
        handler = getattr(self, f"op_{name}", None)
        if handler is None:
            raise _Unsupported(f"JAX primitive {name!r}")
        out = handler(eqn, args, **params)
        return out if isinstance(out, list) else [("tensor", out)]

    def fold(self, eqn: Any, values: list[np.ndarray]) -> list[Any]:
        out = eqn.primitive.bind(*values, **eqn.params)
        outs = out if eqn.primitive.multiple_results else [out]
        return [("const", np.asarray(o)) for o in outs]

    # -- element-wise ------------------------------------------------------------------

    def _dtype(self, eqn: Any) -> Any:
        return np.dtype(eqn.outvars[0].aval.dtype)

    def _binary(self, op: str, eqn: Any, args: list[Any]) -> str:
        dtype = self._dtype(eqn) if op not in _COMPARE else np.dtype(eqn.invars[0].aval.dtype)
        return self.one(op, [self.tensor(a, dtype) for a in args])

    def _unary(self, op: str, args: list[Any]) -> str:
        return self.one(op, [self.tensor(args[0])])

    def op_convert_element_type(self, eqn, args, new_dtype, **_):
        x = self.tensor(args[0])
        if np.dtype(eqn.invars[0].aval.dtype) == np.dtype(new_dtype):
            return self.one("Identity", [x])
        from onnx import helper

        return self.one("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(new_dtype)))

    def op_stop_gradient(self, eqn, args, **_):
        return self.one("Identity", [self.tensor(args[0])])

    op_copy = op_copy_p = op_optimization_barrier = op_stop_gradient

    def op_rsqrt(self, eqn, args, **_):
        return self.one("Reciprocal", [self._unary("Sqrt", args)])

    def op_integer_pow(self, eqn, args, y, **_):
        x = self.tensor(args[0])
        return self.one("Pow", [x, self.const(np.array(float(y), dtype=self._dtype(eqn)))])

    def op_square(self, eqn, args, **_):
        x = self.tensor(args[0])
        return self.one("Mul", [x, x])

    def op_log1p(self, eqn, args, **_):
        one = self.const(np.array(1.0, dtype=self._dtype(eqn)))
        return self.one("Log", [self.one("Add", [self.tensor(args[0]), one])])

    def op_clamp(self, eqn, args, **_):
        lo, x, hi = args
        dtype = self._dtype(eqn)
        if lo[0] == "const" and hi[0] == "const" and np.ndim(lo[1]) == np.ndim(hi[1]) == 0:
            return self.one(
                "Clip", [self.tensor(x), self.tensor(lo, dtype), self.tensor(hi, dtype)]
            )
        y = self.one("Max", [self.tensor(x), self.tensor(lo, dtype)])
        return self.one("Min", [y, self.tensor(hi, dtype)])

    def op_select_n(self, eqn, args, **_):
        if len(args) != 3:
            raise _Unsupported("select_n with more than two cases")
        pred, on_false, on_true = args
        dtype = self._dtype(eqn)
        p = self.tensor(pred)
        if np.dtype(eqn.invars[0].aval.dtype) != np.bool_:
            p = self.one("Cast", [p], to=self.onnx.TensorProto.BOOL)
        return self.one("Where", [p, self.tensor(on_true, dtype), self.tensor(on_false, dtype)])

    # -- shapes ------------------------------------------------------------------------

    def op_reshape(self, eqn, args, new_sizes, dimensions=None, **_):
        if dimensions is not None:
            raise _Unsupported("reshape with dimensions")
        return self.one("Reshape", [self.tensor(args[0]), self.shape_tensor(tuple(new_sizes))])

    def op_broadcast_in_dim(self, eqn, args, shape, broadcast_dimensions, **_):
        x = self.tensor(args[0])
        missing = [i for i in range(len(shape)) if i not in broadcast_dimensions]
        if missing:
            x = self.one("Unsqueeze", [x, self.const(np.array(missing, dtype=np.int64))])
        in_shape = eqn.invars[0].aval.shape
        unsqueezed = [
            in_shape[broadcast_dimensions.index(i)] if i in broadcast_dimensions else 1
            for i in range(len(shape))
        ]
        if [str(d) for d in unsqueezed] == [str(d) for d in shape]:
            return x
        return self.one("Expand", [x, self.shape_tensor(tuple(shape))])

    def op_squeeze(self, eqn, args, dimensions, **_):
        return self.one(
            "Squeeze", [self.tensor(args[0]), self.const(np.array(dimensions, dtype=np.int64))]
        )

    def op_expand_dims(self, eqn, args, dimensions, **_):
        return self.one(
            "Unsqueeze", [self.tensor(args[0]), self.const(np.array(dimensions, dtype=np.int64))]
        )

    def op_transpose(self, eqn, args, permutation, **_):
        return self.one("Transpose", [self.tensor(args[0])], perm=list(permutation))

    def op_concatenate(self, eqn, args, dimension, **_):
        dtype = self._dtype(eqn)
        return self.one("Concat", [self.tensor(a, dtype) for a in args], axis=int(dimension))

    def op_pad(self, eqn, args, padding_config, **_):
        x, fill = args
        if any(int(i) != 0 for _, _, i in padding_config):
            raise _Unsupported("pad with interior padding")
        lo = [int(a) for a, _, _ in padding_config]
        hi = [int(b) for _, b, _ in padding_config]
        dtype = self._dtype(eqn)
        t = self.tensor(x)
        if any(v > 0 for v in lo + hi):
            pads = [max(v, 0) for v in lo] + [max(v, 0) for v in hi]
            t = self.one(
                "Pad",
                [t, self.const(np.array(pads, dtype=np.int64)), self.tensor(fill, dtype)],
                mode="constant",
            )
        if any(v < 0 for v in lo + hi):  # negative padding crops
            axes = [i for i in range(len(lo)) if lo[i] < 0 or hi[i] < 0]
            starts = [-min(lo[i], 0) for i in axes]
            ends = [min(hi[i], 0) or _INT64_MAX for i in axes]
            t = self._slice(t, axes, starts, ends, [1] * len(axes))
        return t

    def _slice(self, x: str, axes: list, starts: list, ends: list, steps: list) -> str:
        def c(v: list) -> str:
            return self.const(np.array(v, dtype=np.int64))

        return self.one("Slice", [x, c(starts), c(ends), c(axes), c(steps)])

    def op_slice(self, eqn, args, start_indices, limit_indices, strides=None, **_):
        shape = eqn.invars[0].aval.shape
        axes, starts, ends, steps = [], [], [], []
        for i, (s, e) in enumerate(zip(start_indices, limit_indices, strict=True)):
            step = 1 if strides is None else int(strides[i])
            full = not self._is_int(e) or (self._is_int(shape[i]) and int(e) == int(shape[i]))
            if int(s) == 0 and full and step == 1:
                continue
            if not self._is_int(e) and not (str(e) == str(shape[i])):
                raise _Unsupported(f"slice ending at symbolic {e!r}")
            axes.append(i)
            starts.append(int(s))
            ends.append(_INT64_MAX if full else int(e))
            steps.append(step)
        if not axes:
            return self.one("Identity", [self.tensor(args[0])])
        return self._slice(self.tensor(args[0]), axes, starts, ends, steps)

    def op_dynamic_slice(self, eqn, args, slice_sizes, **_):
        x, *index_args = args
        if any(kind != "const" for kind, _ in index_args):
            raise _Unsupported("dynamic_slice with data-dependent start")
        return self._static_window(
            eqn, self.tensor(x), [int(v) for _, v in index_args], slice_sizes
        )

    def _static_window(self, eqn: Any, x: str, starts: list[int], sizes: tuple) -> str:
        shape = eqn.invars[0].aval.shape
        axes, s_, e_ = [], [], []
        for i, (s, size) in enumerate(zip(starts, sizes, strict=True)):
            if self._is_int(shape[i]):
                s = min(max(s, 0), int(shape[i]) - int(size))  # XLA clamps starts
            if s == 0 and (not self._is_int(size) or int(size) == int(shape[i])):
                continue
            if not self._is_int(size):
                raise _Unsupported("window with a symbolic size")
            axes.append(i)
            s_.append(s)
            e_.append(s + int(size))
        if not axes:
            return self.one("Identity", [x])
        return self._slice(x, axes, s_, e_, [1] * len(axes))

    def op_gather(self, eqn, args, dimension_numbers, slice_sizes, **_):
        x, idx = args
        dn = dimension_numbers
        rank = len(eqn.invars[0].aval.shape)
        plain_window = (
            idx[0] == "const"
            and np.ndim(idx[1]) == 1
            and tuple(dn.offset_dims) == tuple(range(rank))
            and not dn.collapsed_slice_dims
            and not getattr(dn, "operand_batching_dims", ())
        )
        if not plain_window:
            raise _Unsupported("gather other than a static window")
        starts = [0] * rank
        for axis, s in zip(dn.start_index_map, np.asarray(idx[1]).tolist(), strict=True):
            starts[axis] = int(s)
        return self._static_window(eqn, self.tensor(x), starts, slice_sizes)

    # -- reductions --------------------------------------------------------------------

    def op_reduce_sum(self, eqn, args, axes, **_):
        a = self.const(np.array(axes, dtype=np.int64))
        return self.one("ReduceSum", [self.tensor(args[0]), a], keepdims=0)

    def op_reduce_max(self, eqn, args, axes, **_):
        return self.one("ReduceMax", [self.tensor(args[0])], axes=list(axes), keepdims=0)

    def op_reduce_min(self, eqn, args, axes, **_):
        return self.one("ReduceMin", [self.tensor(args[0])], axes=list(axes), keepdims=0)

    def op_argmax(self, eqn, args, axes, index_dtype, **_):
        out = self.one("ArgMax", [self.tensor(args[0])], axis=int(axes[0]), keepdims=0)
        from onnx import helper

        return self.one("Cast", [out], to=helper.np_dtype_to_tensor_dtype(np.dtype(index_dtype)))

    def _pool(self, eqn, args, window_dimensions, window_strides, padding, **params) -> tuple:
        rank = len(window_dimensions)
        if any(int(d) != 1 for d in params.get("base_dilation", (1,) * rank)) or any(
            int(d) != 1 for d in params.get("window_dilation", (1,) * rank)
        ):
            raise _Unsupported("dilated pooling")
        flat = [
            i
            for i in range(rank)
            if window_dimensions[i] == 1 and window_strides[i] == 1 and tuple(padding[i]) == (0, 0)
        ]
        if rank < 3 or 0 not in flat or len(flat) != 2:
            raise _Unsupported("pooling over other than the spatial axes")
        channel = [i for i in flat if i != 0][0]
        spatial = [i for i in range(rank) if i not in flat]
        perm = [0, channel, *spatial]
        x = self.one("Transpose", [self.tensor(args[0])], perm=perm)
        attrs = {
            "kernel_shape": [int(window_dimensions[i]) for i in spatial],
            "strides": [int(window_strides[i]) for i in spatial],
            "pads": [int(padding[i][0]) for i in spatial] + [int(padding[i][1]) for i in spatial],
        }
        return x, attrs, list(np.argsort(perm)), int(np.prod(attrs["kernel_shape"]))

    def op_reduce_window_max(self, eqn, args, **params):
        x, attrs, back, _ = self._pool(eqn, args, **params)
        y = self.one("MaxPool", [x], **attrs)
        return self.one("Transpose", [y], perm=back)

    def op_reduce_window_sum(self, eqn, args, **params):
        x, attrs, back, size = self._pool(eqn, args, **params)
        y = self.one("AveragePool", [x], count_include_pad=1, **attrs)
        y = self.one("Mul", [y, self.const(np.array(size, dtype=self._dtype(eqn)))])
        return self.one("Transpose", [y], perm=back)

    # -- linear algebra ----------------------------------------------------------------

    def op_dot_general(self, eqn, args, dimension_numbers, **_):
        (lc, rc), (lb, rb) = dimension_numbers
        lhs_shape = eqn.invars[0].aval.shape
        rhs_shape = eqn.invars[1].aval.shape
        dtype = self._dtype(eqn)
        lhs, rhs = self.tensor(args[0], dtype), self.tensor(args[1], dtype)
        if (
            not lb
            and not rb
            and tuple(lc) == (len(lhs_shape) - 1,)
            and tuple(rc) == (0,)
            and len(rhs_shape) == 2
        ):
            return self.one("MatMul", [lhs, rhs])
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        lhs_l = [next(letters) for _ in lhs_shape]
        rhs_l = [next(letters) for _ in rhs_shape]
        for i, j in zip(lc, rc, strict=True):
            rhs_l[j] = lhs_l[i]
        for i, j in zip(lb, rb, strict=True):
            rhs_l[j] = lhs_l[i]
        out = [lhs_l[i] for i in lb]
        out += [lhs_l[i] for i in range(len(lhs_shape)) if i not in lc and i not in lb]
        out += [rhs_l[i] for i in range(len(rhs_shape)) if i not in rc and i not in rb]
        equation = f"{''.join(lhs_l)},{''.join(rhs_l)}->{''.join(out)}"
        return self.one("Einsum", [lhs, rhs], equation=equation)

    def op_conv_general_dilated(
        self,
        eqn,
        args,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        **_,
    ):
        if any(int(d) != 1 for d in lhs_dilation) or batch_group_count != 1:
            raise _Unsupported("transposed or batch-grouped convolution")
        if any(int(p) < 0 for pair in padding for p in pair):
            raise _Unsupported("convolution with negative padding")
        lhs_spec, rhs_spec, out_spec = dimension_numbers
        x = self.one("Transpose", [self.tensor(args[0])], perm=list(lhs_spec))
        kind, w = args[1]
        if kind == "const":
            w = self.const(np.transpose(np.asarray(w), rhs_spec).astype(self._dtype(eqn)), "w")
        else:
            w = self.one("Transpose", [w], perm=list(rhs_spec))
        y = self.one(
            "Conv",
            [x, w],
            strides=[int(s) for s in window_strides],
            pads=[int(p[0]) for p in padding] + [int(p[1]) for p in padding],
            dilations=[int(d) for d in rhs_dilation],
            group=int(feature_group_count),
        )
        return self.one("Transpose", [y], perm=[int(i) for i in np.argsort(out_spec)])


_ELEMENTWISE = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
}
_COMPARE = {
    "gt": "Greater",
    "lt": "Less",
    "ge": "GreaterOrEqual",
    "le": "LessOrEqual",
    "eq": "Equal",
}
_UNARY = {
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "abs": "Abs",
    "erf": "Erf",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "not": "Not",
}


def _install_simple_ops() -> None:
    for prim, op in {**_ELEMENTWISE, **_COMPARE}.items():

        def binary(self, eqn, args, _op=op, **_):
            return self._binary(_op, eqn, args)

        setattr(_Translator, f"op_{prim}", binary)
    for prim, op in _UNARY.items():

        def unary(self, eqn, args, _op=op, **_):
            return self._unary(_op, args)

        setattr(_Translator, f"op_{prim}", unary)


_install_simple_ops()


def function_to_onnx(
    fn: Callable[[Any], Any],
    input_shape: tuple[int, ...],
    *,
    input_name: str = "image",
    output_name: str = "probabilities",
    doc: str = "",
) -> Any:
    """Translates ``fn(x)`` (float32 input, batch first and variable) into an ONNX model.

    Args:
        fn: a JAX-traceable function of one float32 array returning one array.
        input_shape: the input shape without the batch dimension.
        input_name: the ONNX graph input's name.
        output_name: the ONNX graph output's name.
        doc: the graph's doc string.

    Returns:
        An ``onnx.ModelProto`` (opset :data:`OPSET`), checked with ``onnx.checker``.

    Raises:
        BundleError: when ``fn`` uses a primitive this translator does not support.
    """
    import jax
    import jax.numpy as jnp
    import onnx
    from jax import export as jax_export
    from onnx import TensorProto, helper

    spec = ", ".join(["b", *(str(int(d)) for d in input_shape)])
    shape = jax_export.symbolic_shape(spec)
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, jnp.float32))
    tr = _Translator(shape[0])
    tr.input_name = input_name
    consts = [("const", np.asarray(c)) for c in closed.consts]
    try:
        (out,) = tr.run(closed.jaxpr, consts, [("tensor", input_name)])
    except _Unsupported as exc:
        raise BundleError(f"ONNX export: unsupported operation: {exc}") from None
    out_aval = closed.jaxpr.outvars[0].aval
    result = tr.tensor(out)
    tr.nodes.append(helper.make_node("Identity", [result], [output_name]))
    dims = ["batch", *(int(d) for d in input_shape)]
    out_dims = ["batch", *(int(d) for d in out_aval.shape[1:])]
    graph = helper.make_graph(
        tr.nodes,
        "jupyter_imgclass",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_dims)],
        initializer=tr.initializers,
        doc_string=doc,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="jupyter_imgclass",
    )
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases
    onnx.checker.check_model(model)
    return model


def _inference_function(
    model_name: str,
    num_classes: int,
    kind: str,
    weights: Mapping[str, Any],
    input_size: int | None = None,
    head_input: str = "raw",
) -> tuple[Callable[[Any], Any], int]:
    """``f(float32 [N,S,S,3] in 0..255) -> probabilities`` for the trained network."""
    from flax import nnx

    from .. import models
    from ..models.apply import normalise, probabilities
    from ..models.weights import weights_to_model

    spec = models.get(model_name)
    module = weights_to_model(
        spec, num_classes, dict(weights), input_size=input_size, head_input=head_input
    )
    module.eval()
    for _, node in nnx.iter_graph(module):
        # Depthwise layers written as shifted multiply-adds for XLA's CPU backend: export
        # them as one grouped Conv, which onnxruntime runs faster (same numbers).
        if isinstance(node, nnx.Module) and getattr(node, "impl", None) in ("auto", "shifted"):
            node.impl = "grouped"
    graphdef, state = nnx.split(module)

    def forward(x: Any) -> Any:
        logits = nnx.merge(graphdef, state)(normalise(x, spec.mean, spec.std))
        return probabilities(logits, kind)

    return forward, int(input_size or getattr(module, "input_size", None) or spec.input_size)


def export_onnx(
    path: str | os.PathLike[str],
    *,
    model_name: str,
    num_classes: int,
    kind: str,
    weights: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    head_input: str = "raw",
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Writes ``model.onnx`` for a trained network and returns its description.

    Args:
        path: the ``.onnx`` file to write.
        model_name: registered network name.
        num_classes: number of tags.
        kind: ``"multiclass"`` (softmax output) or ``"multilabel"`` (sigmoid output).
        weights: the flat trained weights (as in the bundle).
        preprocessing: recorded in the returned description.
        head_input: what the network's head sees (``"raw"`` or ``"l2"``).
        metadata: string ``metadata_props`` of the ONNX model (the bundle writes ``tags``
            and ``thresholds`` as JSON, so that ONNX-only clients see them too).

    Returns:
        ``{"file", "opset", "input": {...}, "output": {...}}`` for ``model.json``.

    Raises:
        BundleError: the network uses an operation the translator does not support.
    """
    requested = (preprocessing or {}).get("input_size")
    try:
        resize = check_resize(
            (preprocessing or {}).get("resize", DEFAULT_RESIZE), "preprocessing resize"
        )
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    forward, size = _inference_function(
        model_name, num_classes, kind, weights, requested, head_input
    )
    model = function_to_onnx(
        forward,
        (size, size, 3),
        doc=f"{model_name} {kind} classifier exported by jupyter_imgclass",
    )
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=str(key), value=str(value))
    target = Path(path)
    atomic_write(target, model.SerializeToString())
    return {
        "file": target.name,
        "opset": OPSET,
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": ["batch", size, size, 3],
            "range": [0, 255],
            "layout": "NHWC",
            "channel_order": "RGB",
            "resize": resize,
            "note": f"make each image {describe_resize(size, resize)} first; "
            "normalisation is inside the graph",
        },
        "output": {
            "name": "probabilities",
            "shape": ["batch", num_classes],
            "activation": "sigmoid" if kind == "multilabel" else "softmax",
        },
        "preprocessing": dict(preprocessing or {}),
    }


def onnx_predict(path: str | os.PathLike[str], images: np.ndarray) -> np.ndarray:
    """Runs an exported ``model.onnx`` on a uint8 ``[N, S, S, 3]`` batch with onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(images).astype(np.float32)
    return session.run(["probabilities"], {"image": x})[0]
