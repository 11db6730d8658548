"""The model's FLOPs per query, counted from the exported ONNX graph.

Method: ONNX Runtime's symbolic shape inference (``onnxruntime.tools.symbolic_shape_infer``) gives every
tensor of the graph a shape in the symbols ``batch``, ``num_clips`` and ``num_tokens`` (plain ONNX
shape inference loses the shapes behind computed ``Reshape`` targets; the symbolic one keeps them, e.g.
``num_tokens + 7`` for the text plus the Balance Tokens). Each ``MatMul`` costs ``2 * numel(output) * K``
and each ``Gemm`` ``2 * M * N * K``: summed, that is one polynomial in (B, Lv, Lt), evaluated at every
benchmark point. Only matrix products count (softmax, LayerNorm, adds: a few percent more, and bound by
memory, not by the multiply rate); the graph is the exported one, whose attention is the explicit
``softmax(QK^T) V`` math path, so attention's two products are in the count.

Cross-check: :func:`torch_matmul_flops` runs eager PyTorch (math attention) under
``torch.utils.flop_counter.FlopCounterMode`` at the same shape; the two agree to ~1e-5 relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coreba.onnx_io import read_onnx
from export.spec import INPUT_NAMES

SYMBOLS = ("batch", "num_clips", "num_tokens")


@dataclass
class FlopModel:
    """Matrix-product FLOPs of one forward pass as a polynomial in batch, num_clips, num_tokens."""

    expression: str  # sympy's text of the polynomial
    num_matmuls: int
    method: str

    def flops(self, batch: int, num_clips: int, num_tokens: int) -> float:
        import sympy

        values = dict(zip(sympy.symbols(SYMBOLS), (batch, num_clips, num_tokens)))
        return float(sympy.sympify(self.expression).subs(values))

    def per_query(self, num_clips: int, num_tokens: int) -> float:
        return self.flops(1, num_clips, num_tokens)


def _dims(value_info, sympy) -> list:
    return [d.dim_value if d.HasField("dim_value") else sympy.sympify(d.dim_param)
            for d in value_info.type.tensor_type.shape.dim]


def onnx_flop_model(onnx_path: str | Path) -> FlopModel:
    """Symbolic MatMul/Gemm FLOPs of ``onnx_path``; raises ``ValueError`` if some product's shape is unknown."""
    import sympy
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = read_onnx(onnx_path)
    del proto.graph.value_info[:]  # infer every shape afresh, from the named input axes
    inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True, guess_output_rank=False, verbose=0)
    graph = inferred.graph
    shapes = {v.name: _dims(v, sympy) for v in (*graph.value_info, *graph.input, *graph.output)}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    total, count, unknown = sympy.Integer(0), 0, []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not a or not out:
            unknown.append(node.name)
            continue
        if node.op_type == "Gemm":
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            k = a[0] if trans_a else a[1]
        else:
            k = a[-1]
        total += 2 * sympy.Mul(*out) * k
        count += 1
    if unknown:
        raise ValueError(f"symbolic shape inference left {len(unknown)} product(s) without a shape, e.g. {unknown[:3]}")
    expression = sympy.expand(total)
    extra = expression.free_symbols - set(sympy.symbols(SYMBOLS))
    if extra:
        raise ValueError(f"the FLOP count depends on unnamed dims {sorted(map(str, extra))}")
    return FlopModel(str(expression), count, "onnx-symbolic-shapes: 2*numel(out)*K per MatMul/Gemm")


@torch.inference_mode()
def torch_matmul_flops(model, feeds: dict[str, np.ndarray]) -> float:
    """FLOPs PyTorch's FlopCounterMode counts for one eager forward (math attention) of ``feeds``."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    backend = model.config.attention_backend
    model.set_attention_backend("math")
    device = next(model.parameters()).device
    try:
        with FlopCounterMode(display=False) as counter:
            model(*(torch.from_numpy(feeds[name]).to(device) for name in INPUT_NAMES), validate=False)
    finally:
        model.set_attention_backend(backend)
    return float(counter.get_total_flops())


def analytic_fallback(model, num_clips_list: list[int], num_tokens: int) -> FlopModel:
    """When there is no ONNX graph: FlopCounterMode at B=1 for each length, stored as a piecewise table."""
    from export.validate import make_feeds

    table = {lv: torch_matmul_flops(model, make_feeds(model.config, (lv,), (num_tokens,))) for lv in num_clips_list}
    return TableFlopModel(str(table), 0, "torch FlopCounterMode (eager, math attention), B=1", table, num_tokens)


@dataclass
class TableFlopModel(FlopModel):
    table: dict[int, float] | None = None
    num_tokens: int = 32

    def flops(self, batch: int, num_clips: int, num_tokens: int) -> float:
        if self.table is None or num_clips not in self.table or num_tokens != self.num_tokens:
            return float("nan")
        return batch * self.table[num_clips]
