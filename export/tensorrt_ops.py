"""Static TensorRT compatibility of an ONNX graph: every op in TensorRT's ONNX-parser support list, with
supported data types, for a supported opset. Runs anywhere (no TensorRT, no GPU), so a graph that TensorRT
would refuse fails the CPU tests rather than a later GPU session.

Source of the table: onnx-tensorrt ``docs/operators.md`` ("Supported ONNX Operators"), commit
96e781103cfc4adf4a6bb557e94bac8e693f6f4c ("ONNX-TensorRT 10.1 GA release", 2024-06-17), which states
"TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20". Transcription notes:

* The "Supported Types" column describes the op's data tensors (type ``T`` in the ONNX schema). Index,
  shape and axes inputs (``Gather`` indices, ``Reshape`` shape, ``Slice`` starts/ends, ``Where``'s
  condition, ...) are int64/int32/bool by the ONNX schema itself and are not checked against it here.
* ``ConstantOfShape`` is listed there as "INF64"; read as INT64.
* DOUBLE has "limited support": TensorRT casts it to FLOAT (clamped to +-FLT_MAX). Counted as FP32, with a
  note. INT8/INT4/FP8 are quantized types, valid only through Q/DQ nodes.
* INT64: the brief for this module assumed TensorRT casts INT64 to INT32. That was TensorRT 8's
  behaviour; the onnx-tensorrt changelog for 9.0 EA says "Added support for INT64 data type. The ONNX
  parser no longer automatically casts INT64 to INT32", and the table lists INT64 for the ops that take
  it. So INT64 on an op that lists INT64 is fine (reported as a note: the exporter's shape arithmetic is
  INT64), and INT64 on an op that does not list it is a problem, as TensorRT 10 would reject it.
* ``Loop``, ``If`` and ``Scan`` are supported by TensorRT; the project's exporter forbids them for its
  own reasons (the recurrent turns must unroll), which ``export.onnx_export.check_structure`` enforces.

Restrictions that can be read from the graph are checked: inputs that must be initializers (``CumSum``
axis, ``Squeeze``/``Unsqueeze``/``Slice``/``Pad``/``Reduce*`` axes), ``LayerNormalization`` with only its
first output used, ``TopK`` with ``sorted=1``, ops from a non-default domain (they would need a plugin).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto

from coreba.onnx_io import read_onnx

SOURCE = "onnx-tensorrt docs/operators.md @ 96e781103cfc4adf4a6bb557e94bac8e693f6f4c (TensorRT 10.1 GA)"
MIN_OPSET, MAX_OPSET = 9, 20



def _words(text: str) -> list[str]:
    return text.split()


_F = ("FP32", "FP16", "BF16")
_I = ("INT32", "INT64")
_B = ("BOOL",)

# "Supported Types" -> operators, as in the table (Y rows)
_SUPPORTED_BY_TYPES: dict[tuple[str, ...], str] = {
    _F + _I: """Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min
        Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
        ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK""",
    _F: """Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos Cosh
        CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool GroupNormalization
        GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf LayerNormalization LeakyRelu Log
        LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization ParametricSoftplus Pow
        PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Reciprocal Resize RNN Round
        ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample""",
    _B: "And Not Or Xor",
    _F + _I + ("UINT8",) + _B: "Cast CastLike",
    _F + _I + _B: """Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If
        Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where""",
    ("FP32", "FP16"): "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    ("INT8", "FP8", "INT4"): "DequantizeLinear",
    _F + ("INT8",) + _I: "Gelu",
    _F + ("FP8",) + _I: "Mean",
}

# N rows: operators the parser does not import
UNSUPPORTED_OPS: frozenset[str] = frozenset(_words("""AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr
    BitwiseXor BlackmanWindow Col2Im CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det
    DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix
    Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul
    RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
    SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer
    Unique"""))

SUPPORTED_TYPES: dict[str, frozenset[str]] = {
    op: frozenset(types) for types, ops in _SUPPORTED_BY_TYPES.items() for op in _words(ops)
}

# Restrictions of the table, kept for the report (the checkable ones are also enforced below).
RESTRICTIONS: dict[str, str] = {
    "AveragePool": "2D or 3D pooling only; dilations empty or all ones",
    "CumSum": "axis must be an initializer",
    "Dropout": "training_mode must be an initializer that is False",
    "EyeLike": "input must have static dimensions",
    "Hardmax": "axis dimension must be a build-time constant",
    "If": "both branches' outputs must have the same rank",
    "LayerNormalization": "only the first output (Y) is supported",
    "Loop": "scan outputs cannot have a dynamic length; carried shapes must not change across iterations",
    "MaxPool": "2D or 3D pooling only; no Indices output; dilations empty or all ones",
    "OneHot": "depth must be a build-time constant",
    "Pad": "axes must be an initializer",
    "Resize": "limited coordinate-transformation/nearest modes; no antialiasing",
    "ScatterND": "reduction is not supported",
    "Slice": "axes must be an initializer",
    "Squeeze": "axes must be an initializer",
    "TopK": "sorted must be 1; K below 3840",
    "Unsqueeze": "axes must be a constant tensor",
    **{op: "axes must be an initializer" for op in SUPPORTED_TYPES if op.startswith("Reduce")},
}

# Inputs the type list applies to, for ops whose other inputs are indices/shapes/axes/conditions.
_DATA_INPUTS: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("Reshape", "Expand", "Tile", "Slice", "Squeeze", "Unsqueeze", "Gather", "GatherElements",
                     "GatherND", "CumSum", "TopK", "Split", "Resize", "Upsample", "Dropout", "Trilu", "Pow",
                     "Shape", "Size", "EyeLike", "DepthToSpace", "ReverseSequence", "QuantizeLinear",
                     "DequantizeLinear", "ArgMax", "ArgMin", "Cast", "CastLike", "Loop", "If", "Scan", "NonZero",
                     "RandomNormalLike", "RandomUniformLike", "SpaceToDepth"), (0,)),
    **{op: (0,) for op in SUPPORTED_TYPES if op.startswith("Reduce")},
    "Pad": (0, 2), "Scatter": (0, 2), "ScatterElements": (0, 2), "ScatterND": (0, 2), "Where": (1, 2),
    "OneHot": (2,), "ConstantOfShape": (), "Constant": (), "RandomNormal": (), "RandomUniform": (),
    "GridSample": (0, 1), "RoiAlign": (0, 1), "NonMaxSuppression": (0, 1),
}
# Ops whose type list describes (also) what they produce.
_CHECK_OUTPUT = frozenset({"Cast", "CastLike", "ConstantOfShape", "Constant", "EyeLike", "RandomNormal",
                           "RandomUniform", "RandomNormalLike", "RandomUniformLike"})
# input index -> its name, for inputs TensorRT needs as weights (an initializer or a Constant node's output)
_CONSTANT_INPUTS: dict[str, dict[int, str]] = {
    "CumSum": {1: "axis"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "Slice": {3: "axes"},
    "Pad": {3: "axes"}, "Dropout": {2: "training_mode"},
    **{op: {1: "axes"} for op in SUPPORTED_TYPES if op.startswith("Reduce")},
}

_CHECKED_RESTRICTIONS = frozenset(_CONSTANT_INPUTS) | {"LayerNormalization", "ScatterND"}

_ONNX_TO_TRT_TYPE: dict[int, str] = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL", TensorProto.UINT8: "UINT8",
    TensorProto.INT8: "INT8", TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.DOUBLE: "DOUBLE",
}
if hasattr(TensorProto, "INT4"):
    _ONNX_TO_TRT_TYPE[TensorProto.INT4] = "INT4"
IO_TYPES = frozenset({"FP32", "FP16", "BF16", "INT32", "INT64", "UINT8", "BOOL"})
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _type_name(elem_type: int) -> str:
    return _ONNX_TO_TRT_TYPE.get(elem_type, TensorProto.DataType.Name(elem_type) if elem_type else "UNKNOWN")


@dataclass
class CompatibilityReport:
    """What TensorRT's ONNX parser would make of a graph: ``problems`` it would reject, ``notes`` it accepts."""

    opset: int
    op_counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"TensorRT compatibility ({SOURCE}): opset {self.opset}, {sum(self.op_counts.values())} nodes, "
                f"{len(self.op_counts)} op types: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}")
        return "\n".join([head] + [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes])


class _Analyzer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.types: dict[str, int] = {}
        self.constants: set[str] = set()
        self.functions = {(f.domain, f.name): f for f in model.functions}
        # (op, problem kind, detail) -> node names, so one line per kind of problem, not per node
        self.bad: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.int64_ops: Counter = Counter()
        self.double_ops: Counter = Counter()
        self.untyped = 0
        self.op_counts: Counter = Counter()

    def collect_types(self, graph: onnx.GraphProto) -> None:
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.HasField("tensor_type"):
                self.types[value.name] = value.type.tensor_type.elem_type
        for init in graph.initializer:
            self.types[init.name] = init.data_type
            self.constants.add(init.name)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                self.constants.update(o for o in node.output if o)
                for attr in node.attribute:
                    if attr.name == "value":
                        self.types[node.output[0]] = attr.t.data_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self.collect_types(attr.g)
                for sub in attr.graphs:
                    self.collect_types(sub)

    def visit(self, graph_nodes, where: str = "") -> None:
        for node in graph_nodes:
            self.visit_node(node, where)
            for attr in node.attribute:
                subgraphs = ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(attr.graphs)
                for sub in subgraphs:
                    self.visit(sub.node, f"{where}{node.op_type} '{node.name}' / ")

    def visit_node(self, node: onnx.NodeProto, where: str) -> None:
        op, name = node.op_type, where + (node.name or f"<unnamed {node.op_type}>")
        self.op_counts[op] += 1
        if (node.domain, op) in self.functions:  # a model-local function: the parser expands it
            self.visit(self.functions[(node.domain, op)].node, f"{where}function {op} / ")
            return
        if node.domain not in _DEFAULT_DOMAINS:
            self.bad[(op, f"is in domain '{node.domain}', not the default ONNX domain: TensorRT's parser "
                          "would need a plugin for it (an ONNX Runtime-optimized graph has such fused ops; "
                          "build TensorRT engines from the plain export)")].append(name)
            return
        if op in UNSUPPORTED_OPS:
            self.bad[(op, f"is not supported by TensorRT's ONNX parser ({SOURCE})")].append(name)
            return
        if op not in SUPPORTED_TYPES:
            self.bad[(op, "is not in TensorRT's supported-operator table")].append(name)
            return
        self.check_types(node, name)
        self.check_restrictions(node, name)

    def check_types(self, node: onnx.NodeProto, name: str) -> None:
        op, allowed = node.op_type, SUPPORTED_TYPES[node.op_type]
        indices = _DATA_INPUTS.get(op, tuple(range(len(node.input))))
        tensors = [node.input[i] for i in indices if i < len(node.input) and node.input[i]]
        if op in _CHECK_OUTPUT and node.output:
            tensors.append(node.output[0])
        for tensor in tensors:
            elem = self.types.get(tensor, 0)
            if not elem:
                self.untyped += 1
                continue
            dtype = _type_name(elem)
            if dtype == "DOUBLE":
                self.double_ops[op] += 1
                dtype = "FP32"
            if dtype == "INT64" and "INT64" in allowed:
                self.int64_ops[op] += 1
            if dtype not in allowed:
                self.bad[(op, f"on {dtype} (TensorRT supports {op} on {', '.join(sorted(allowed))})")].append(name)

    def check_restrictions(self, node: onnx.NodeProto, name: str) -> None:
        op = node.op_type
        for index, arg in _CONSTANT_INPUTS.get(op, {}).items():
            if index < len(node.input) and node.input[index] and node.input[index] not in self.constants:
                self.bad[(op, f"has a computed '{arg}' input; TensorRT requires it to be an initializer")].append(name)
        if op == "LayerNormalization" and any(node.output[1:]):
            self.bad[(op, "uses its Mean/InvStdDev outputs; TensorRT supports only the first output Y")].append(name)
        if op == "MaxPool" and any(node.output[1:]):
            self.bad[(op, "uses its Indices output, which TensorRT does not support")].append(name)
        if op == "TopK" and any(a.name == "sorted" and a.i == 0 for a in node.attribute):
            self.bad[(op, "has sorted=0; TensorRT requires sorted=1")].append(name)
        if op == "ScatterND" and any(a.name == "reduction" and a.s not in (b"", b"none") for a in node.attribute):
            self.bad[(op, "has a reduction, which TensorRT does not support")].append(name)


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return read_onnx(model, load_weights=False)  # types and structure only: weights are not needed


def analyze_tensorrt_compatibility(model: str | Path | onnx.ModelProto) -> CompatibilityReport:
    """Check every node (subgraphs and model-local functions included) against TensorRT's table."""
    proto = _load(model)
    opsets = {o.domain: o.version for o in proto.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    report = CompatibilityReport(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        report.problems.append(f"opset {opset} is outside TensorRT's supported range {MIN_OPSET}..{MAX_OPSET} "
                               f"({SOURCE}); export with an opset in that range")
    try:  # types of intermediate tensors (shape inference keeps going past ops it cannot type)
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as err:  # a graph that shape inference rejects is still checked, untyped
        report.notes.append(f"ONNX shape inference failed ({err}); data types checked only where declared")
        inferred = proto
    analyzer = _Analyzer(inferred)
    analyzer.collect_types(inferred.graph)
    for value in list(inferred.graph.input) + list(inferred.graph.output):
        dtype = _type_name(value.type.tensor_type.elem_type)
        if dtype not in IO_TYPES:
            report.problems.append(f"graph input/output '{value.name}' is {dtype}; TensorRT engine I/O supports "
                                   f"{', '.join(sorted(IO_TYPES))}")
    analyzer.visit(inferred.graph.node)
    report.op_counts = analyzer.op_counts
    for (op, detail), nodes in sorted(analyzer.bad.items()):
        more = f" and {len(nodes) - 1} more" if len(nodes) > 1 else ""
        report.problems.append(f"{op} {detail} (node '{nodes[0]}'{more})")
    if analyzer.int64_ops:
        ops = ", ".join(f"{op} {n}" for op, n in analyzer.int64_ops.most_common())
        report.notes.append(f"INT64 data on {sum(analyzer.int64_ops.values())} node inputs ({ops}): shape "
                            "arithmetic; TensorRT >= 9 handles INT64 natively for these ops (the parser no longer "
                            "casts INT64 to INT32)")
    if analyzer.double_ops:
        report.notes.append(f"DOUBLE data on {dict(analyzer.double_ops)}: TensorRT casts DOUBLE to FLOAT, clamped "
                            "to +-FLT_MAX")
    if analyzer.untyped:
        report.notes.append(f"{analyzer.untyped} node inputs have no inferred type; their types were not checked")
    restricted = sorted(op for op in report.op_counts if op in RESTRICTIONS and op not in _CHECKED_RESTRICTIONS)
    if restricted:
        unchecked = "; ".join(f"{op}: {RESTRICTIONS[op]}" for op in restricted)
        report.notes.append(f"restrictions not checked here: {unchecked}")
    return report


def check_tensorrt_compatibility(model: str | Path | onnx.ModelProto) -> list[str]:
    """The problems TensorRT's ONNX parser would have with ``model`` (an empty list when there are none)."""
    return analyze_tensorrt_compatibility(model).problems
