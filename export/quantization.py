"""Static post-training int8 quantization of the exported graph, calibrated on data: OpenVINO via NNCF, and ONNX
Runtime's QDQ quantization (``onnxruntime.quantization.quantize_static``). The libraries do the work; this module
chooses what to quantize and records what it kept.

Quantized: the matrix products with a weight (the Linear layers of the input projections, the CFC attention
projections and FFNs, the saliency encoder and the decoder trunk), weights int8 per output channel,
activations 8-bit with scales from the calibration data. That is where ~all the FLOPs are.

Kept in fp32, and why:

* **the final heads**: every matrix product between the trunk's last LayerNorm and a model output (the class
  head, the span MLP and the anchor-refinement MLP it shares weights with, the two saliency projections), found
  from the graph's structure by :func:`head_gemms` (the exporter keeps no module names). Their error would land
  unfiltered on the scores, spans and saliency that the metrics read; they are < 1 % of the FLOPs.
* **products of two activations** (attention QK^T and AV), named to both quantizers by :func:`kept_in_fp32`:
  their inputs (softmax probabilities, masked scores) have no range a static scale fits, and they are a small
  part of the work at these lengths. (ONNX Runtime's ``MatMulConstBOnly`` option does not apply to its QDQ
  format: without the explicit list, it quantizes them.)
* **every other op**: LayerNorm, Softmax, PReLU/ReLU, the residual adds, the masks (``Where`` with the dtype's
  most negative value), the sine position embeddings and the sigmoid/inverse-sigmoid of the spans: only
  MatMul/Gemm inputs get quantizers; the rest runs in fp32 between them.

Calibration feeds are single queries (no padding in the statistics: padded rows are computed, then masked, and
would widen the activation ranges with values that never reach an output).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from coreba.engines.isa import cpu_isa
from coreba.onnx_io import CONFIG_KEY, GRAPH_KEY, TOP_K_KEY, metadata_of

BACKENDS = ("openvino", "onnxruntime")
Feeds = dict[str, np.ndarray]
GEMMS = ("MatMul", "Gemm")
# Where the trunk ends: every head of this model starts from a LayerNorm output (post-norm layers).
HEAD_BOUNDARY = "LayerNormalization"


class QuantizationError(RuntimeError):
    """The quantizer could not produce a usable int8 model; the message says what failed."""


@dataclass
class QuantizationReport:
    """What was done, written into the artifact's metadata and printed by ``export/quantize.py``."""

    backend: str
    library: str
    calibration: str
    calibration_samples: int
    quantized_gemms: int
    kept_fp32: dict[str, list[str]]  # reason -> node names
    settings: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        kept = "; ".join(f"{reason}: {len(names)}" for reason, names in self.kept_fp32.items())
        return (f"{self.backend} int8 ({self.library}): {self.quantized_gemms} weight GEMMs quantized, calibrated on "
                f"{self.calibration_samples} queries of {self.calibration} in {self.seconds:.0f} s; kept in fp32: "
                f"{kept}; every LayerNorm, Softmax, activation, residual add and mask")

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def head_gemms(proto: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes between the trunk's last LayerNorm and a graph output (the final heads).

    Walks back from every output through the producers, not past a LayerNormalization (nor a Shape) node.
    Raises if an output reaches no head, or its walk reaches a feature input (then the rule no longer fits).
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    inputs = {i.name for i in proto.graph.input}
    heads: list[str] = []
    for output in proto.graph.output:
        if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue  # an end-to-end graph's num_clips: a count of the mask, no head behind it
        seen: set[str] = set()
        queue, found = deque([output.name]), []
        while queue:
            tensor = queue.popleft()
            if tensor in inputs and tensor.endswith("_feats"):
                raise QuantizationError(f"walking back from {output.name} reached the input {tensor} without a "
                                        f"{HEAD_BOUNDARY}: the head rule of export/quantization.py needs updating")
            node = producer.get(tensor)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in (HEAD_BOUNDARY, "Shape"):  # a Shape carries no values of its input
                continue
            if node.op_type in GEMMS:
                found.append(node.name)
            queue.extend(node.input)
        if not found:
            raise QuantizationError(f"no matrix product between the last {HEAD_BOUNDARY} and {output.name}")
        heads += [name for name in found if name not in heads]
    return heads


def kept_in_fp32(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Reason -> names of the matrix products both backends leave in fp32 (see the module docstring)."""
    weights = set(weight_gemms(proto))
    return {"final heads": head_gemms(proto),
            "attention (activation x activation) products": [n.name for n in proto.graph.node
                                                             if n.op_type in GEMMS and n.name not in weights]}


def constant_tensors(proto: onnx.ModelProto) -> set[str]:
    """Tensors known before any input arrives: initializers, Constant outputs, and outputs of nodes that read only
    those (the exporter leaves large weights behind a Transpose it did not fold)."""
    constants = {i.name for i in proto.graph.initializer}
    for node in proto.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Constant" or (node.input and all(i in constants for i in node.input if i)):
            constants.update(node.output)
    return constants


def weight_gemms(proto: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes whose second input is a constant (a weight): the ones worth quantizing."""
    constants = constant_tensors(proto)
    return [n.name for n in proto.graph.node if n.op_type in GEMMS and n.input[1] in constants]


# ----------------------------------------------------------------------------------------------- OpenVINO


def quantize_openvino(onnx_path: str | Path, feeds: Sequence[Feeds], output_xml: Path, calibration: str,
                      metadata: dict[str, str]) -> QuantizationReport:
    """NNCF post-training quantization of the OpenVINO model read from ``onnx_path``; writes an IR (.xml + .bin)."""
    import nncf
    import openvino as ov
    from openvino import passes as ov_passes

    nncf.set_log_level(logging.WARNING)  # its per-node INFO lines would bury the report
    start = time.perf_counter()
    kept = kept_in_fp32(onnx.load(str(onnx_path)))
    model = ov.Core().read_model(str(onnx_path))  # OpenVINO keeps the ONNX node names as friendly names
    # The exporter leaves large weights behind a Transpose; NNCF takes a MatMul for a weight product only when its
    # weight is a Constant, so fold them first (without this it quantized 42 of the full-size model's 147).
    folding = ov_passes.Manager()
    folding.register_pass(ov_passes.ConstantFolding())
    folding.run_passes(model)
    settings = {"preset": "MIXED (symmetric int8 weights, asymmetric activations)", "model_type": "TRANSFORMER",
                "target_device": "CPU", "subset_size": len(feeds)}
    quantized = nncf.quantize(model, nncf.Dataset(list(feeds)), preset=nncf.QuantizationPreset.MIXED,
                              model_type=nncf.ModelType.TRANSFORMER, target_device=nncf.TargetDevice.CPU,
                              subset_size=len(feeds),
                              ignored_scope=nncf.IgnoredScope(names=[n for names in kept.values() for n in names]))
    report = QuantizationReport(
        "openvino", f"nncf {nncf.__version__}, openvino {ov.__version__.split('-')[0]}", calibration, len(feeds),
        quantized_gemms=_count_quantized_openvino(quantized), kept_fp32=kept, settings=settings,
        seconds=time.perf_counter() - start)
    for key, value in {**metadata, "precision": "int8", "quantization": report.to_json()}.items():
        quantized.set_rt_info(value, ["coreba", key])
    ov.save_model(quantized, str(output_xml), compress_to_fp16=False)
    return report


def _count_quantized_openvino(model) -> int:
    """MatMuls whose weight is stored in int8 (an int8 Constant, then Convert and a dequantizing Multiply)."""

    def int8_weight(port, depth: int = 4) -> bool:
        node = port.get_source_output().get_node()
        for _ in range(depth):  # Constant(i8) -> Convert -> [Subtract] -> Multiply -> MatMul
            if node.get_type_name() == "Constant":
                return node.get_output_element_type(0).get_type_name() == "i8"
            if node.get_input_size() == 0:
                return False
            node = node.input(0).get_source_output().get_node()
        return False

    return sum(op.get_type_name() == "MatMul" and int8_weight(op.input(1)) for op in model.get_ops())


# ------------------------------------------------------------------------------------------- ONNX Runtime


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._items = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._items, None)


def quantize_onnxruntime(onnx_path: str | Path, feeds: Sequence[Feeds], output: Path, calibration: str,
                         metadata: dict[str, str], work_dir: Path) -> QuantizationReport:
    """ONNX Runtime static QDQ quantization: U8S8 (uint8 activations, int8 per-channel weights), MinMax.

    U8S8 is ONNX Runtime's fast x86 path; without VNNI its kernels can saturate the int16 sums of u8 x s8
    products, so there the weights use 7 bits (``reduce_range``), as ONNX Runtime's documentation advises.
    """
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    start = time.perf_counter()
    prepared = work_dir / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(prepared))  # shape inference + ONNX Runtime's basic fusions
    kept = kept_in_fp32(onnx.load(str(prepared)))  # node names survive the pre-processing
    reduce_range = not cpu_isa().vnni
    settings = {"format": "QDQ", "activations": "uint8 asymmetric (MinMax)", "weights": "int8 symmetric per channel",
                "reduce_range": reduce_range, "op_types": list(GEMMS)}
    quantize_static(str(prepared), str(output), _Reader(feeds), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(GEMMS), per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=[n for names in kept.values() for n in names],
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    quantized = onnx.load(str(output))
    dequantized_inputs = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    count = sum(n.op_type in GEMMS and all(i in dequantized_inputs for i in n.input[:2]) for n in quantized.graph.node)
    report = QuantizationReport(
        "onnxruntime", f"onnxruntime {onnxruntime.__version__}", calibration, len(feeds), quantized_gemms=count,
        kept_fp32=kept, settings=settings, seconds=time.perf_counter() - start)
    entries = {**metadata, "precision": "int8", "quantization": report.to_json()}
    kept = [p for p in quantized.metadata_props if p.key not in entries]
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(kept)
    for key, value in entries.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, str(output))
    return report


def quantize(onnx_path: str | Path, backend: str, feeds: Sequence[Feeds], output: Path, calibration: str,
             work_dir: Path) -> QuantizationReport:
    """Quantize ``onnx_path`` (a raw or an end-to-end graph) with ``backend`` into ``output`` (an .xml for openvino,
    an .onnx for onnxruntime), carrying the source's config and graph metadata along so the Predictor and the served
    model can read the model's dims. ``feeds`` may hold more inputs than the graph takes (a raw graph has no
    duration)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not feeds:
        raise QuantizationError("no calibration data")
    header = onnx.load(str(onnx_path), load_external_data=False)
    source = metadata_of(header)
    if CONFIG_KEY not in source:
        raise QuantizationError(f"{onnx_path} has no 'config' metadata: export it with export/to_onnx.py")
    # what the engines, the Predictor and the served model read: the config, and which graph (raw or end-to-end,
    # with its K) the file holds
    metadata = {key: source[key] for key in (CONFIG_KEY, GRAPH_KEY, TOP_K_KEY) if key in source}
    metadata["source_onnx"] = str(onnx_path)
    graph_inputs = [i.name for i in header.graph.input]
    feeds = [{name: feed[name] for name in graph_inputs} for feed in feeds]  # e.g. no duration for a raw graph
    if backend == "openvino":
        return quantize_openvino(onnx_path, feeds, output, calibration, metadata)
    return quantize_onnxruntime(onnx_path, feeds, output, calibration, metadata, work_dir)
