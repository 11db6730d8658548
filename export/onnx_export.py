"""Export COREBA to one self-contained ONNX file and prove it right before reporting success.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) traces :class:`export.wrapper.ExportWrapper`.
The Recurrent Alignment Mechanism is a Python loop over one module, so tracing unrolls it into N_r copies
of the CFC subgraph whose MatMuls all read the SAME initializers: the file holds every weight once.

Known traps, and what is done about each:

* An example batch of 1 lets the exporter specialise B to 1: the example batch has 3 samples of
  different lengths (``export.spec.EXPORT_*_LENS``), and B, Lv, Lt are declared dynamic with bounds.
* Weights go to a side ``.data`` file unless told otherwise: ``external_data=False`` on export and save.
* ``-inf`` masks give NaN in ONNX Runtime where eager gives zeros: masks are filled with the dtype's
  most negative finite value, and valid inputs never have a fully masked row.

Checks before success: the asked opset, no Loop/If node, ``onnx.checker`` (full), strict shape inference,
file size within 5% of the parameter bytes, and ONNX Runtime parity against eager PyTorch on random inputs at
several shapes (``export.validate``).

``end_to_end=True`` exports the same wrapper with the post-processing inside (``export.wrapper``): one more
input, ``duration``, and the answer out (moments, saliency, num_clips); its parity is checked against eager
PyTorch + ``coreba.postprocess.postprocess``. The metadata says which graph a file holds (``graph``) and,
for an end-to-end graph, how many moments it returns (``top_k``). Both graphs go through the same
:func:`export_onnx`: the same opset checks, output-path check and atomic writes below.

Nothing is lost or faked on the way (:mod:`coreba.atomic`): the output path is checked before the ~30 s
trace; the file is written under a temporary name beside ``output`` and moved into place only after every
check passed, so a failed or interrupted (Ctrl-C) export leaves the previous file as it was and no partial
file. Each ``optimize`` copy is checked on its own (its own parity run) and carries its own figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch.export import Dim

import coreba
from coreba.atomic import atomic_file, check_output_path
from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from coreba.model import Coreba
from coreba.onnx_io import GRAPH_KEY, TOP_K_KEY, read_onnx
from export.spec import (
    ANSWER_NAMES,
    DEFAULT_OPSET,
    DEFAULT_TOP_K,
    END_TO_END_INPUT_AXES,
    END_TO_END_INPUT_NAMES,
    EXPORT_TEXT_LENS,
    EXPORT_VIDEO_LENS,
    FP16_ANSWER_TOLERANCE,
    FP16_SCORE_TOLERANCE,
    FP16_TOLERANCE,
    FP32_ANSWER_TOLERANCE,
    FP32_TOLERANCE,
    INPUT_AXES,
    INPUT_NAMES,
    MAX_EXPORT_BATCH,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAMES,
    SUPPORTED_OPSETS,
)
from export.validate import ParityCase, ParityReport, answer_feeds, check_answer_parity, check_parity
from export.wrapper import EndToEndWrapper, ExportWrapper

FORBIDDEN_OPS = ("Loop", "If", "Scan")
SIZE_SLACK = 0.05  # initializers may exceed the parameter bytes by this fraction (folded constants)
GRAPH_BYTES = 512 * 1024  # the graph's own structure; ~0.15 MB for the full model, so its file is < 1.05 x params


class ExportError(RuntimeError):
    """The exported graph failed a structural check, or the export was asked for what it cannot produce."""


def check_opset(opset: int) -> int:
    """``opset`` if an export at it is produced and passes every check (:data:`export.spec.SUPPORTED_OPSETS`)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset!r} is not supported: choose {MIN_OPSET}..{MAX_OPSET} (default "
                          f"{DEFAULT_OPSET})")
    return opset


def opset_of(proto: onnx.ModelProto) -> int | None:
    """The default-domain opset a model declares (None if it declares none)."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def optimized_path(output: Path, kind: str) -> Path:
    """Where the ``kind``-optimized copy of ``output`` goes: ``coreba.onnx`` -> ``coreba.ort.onnx``."""
    return output.with_name(f"{output.stem}.{kind}{output.suffix}")


@dataclass
class ExportResult:
    path: Path
    file_bytes: int
    parameter_bytes: int
    op_counts: Counter
    parity: ParityReport
    optimized: dict[str, Path] = field(default_factory=dict)
    optimized_parity: dict[str, ParityReport] = field(default_factory=dict)

    def summary(self) -> str:
        ratio = self.file_bytes / self.parameter_bytes
        ops = ", ".join(f"{op} {self.op_counts[op]}" for op in ("MatMul", "Softmax", "LayerNormalization", "Gemm")
                        if self.op_counts[op])
        lines = [f"ONNX file: {self.path}",
                 f"size: {self.file_bytes / 1e6:.2f} MB = {ratio:.3f} x the parameter bytes "
                 f"({self.parameter_bytes / 1e6:.2f} MB): every weight stored once",
                 f"ops: {sum(self.op_counts.values())} nodes; {ops}; no Loop/If",
                 self.parity.table()]
        for kind, path in self.optimized.items():
            lines += [f"optimized ({kind}): {path}", self.optimized_parity[kind].table()]
        return "\n".join(lines)


def _dynamic_shapes(model: Coreba, end_to_end: bool = False) -> dict[str, dict[int, Dim]]:
    cfg = model.config
    bounds = {"batch": MAX_EXPORT_BATCH, "num_clips": cfg.max_video_len, "num_tokens": cfg.max_text_len}
    dims = {name: Dim(name, min=1, max=bound) for name, bound in bounds.items()}
    axes, names = (END_TO_END_INPUT_AXES, END_TO_END_INPUT_NAMES) if end_to_end else (INPUT_AXES, INPUT_NAMES)
    return {inp: {axis: dims[name] for axis, name in axes[inp].items()} for inp in names}


def _example_inputs(model: Coreba, end_to_end: bool = False) -> tuple[torch.Tensor, ...]:
    cfg = model.config
    video_lens = tuple(min(n, cfg.max_video_len) for n in EXPORT_VIDEO_LENS)
    text_lens = tuple(min(n, cfg.max_text_len) for n in EXPORT_TEXT_LENS)
    feeds = answer_feeds(cfg, ParityCase("export example", video_lens, text_lens), seed=1234)
    return tuple(torch.from_numpy(feeds[name]) for name in (END_TO_END_INPUT_NAMES if end_to_end else INPUT_NAMES))


def answer_top_k(model: Coreba, top_k: int = DEFAULT_TOP_K) -> int:
    """K of an end-to-end graph: the moments asked for, at most the model's queries (as ``postprocess`` keeps)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return min(top_k, model.config.num_queries)


def trace_to_onnx(model: Coreba, opset: int = DEFAULT_OPSET, fp16: bool = False,
                  top_k: int | None = None) -> onnx.ModelProto:
    """Trace the wrapper with the dynamo exporter and return the (in-memory) ONNX model: the raw graph, or with
    ``top_k`` the end-to-end graph returning that many moments per query."""
    dtype = torch.float16 if fp16 else torch.float32
    end_to_end = top_k is not None
    wrapper = EndToEndWrapper(model, dtype, top_k) if end_to_end else ExportWrapper(model, dtype)
    inputs, outputs = (END_TO_END_INPUT_NAMES, ANSWER_NAMES) if end_to_end else (INPUT_NAMES, OUTPUT_NAMES)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, _example_inputs(model, end_to_end), dynamo=True, external_data=False,
                                    dynamic_shapes=_dynamic_shapes(model, end_to_end), input_names=list(inputs),
                                    output_names=list(outputs), opset_version=opset, optimize=True,
                                    verbose=False, report=False)
    proto = program.model_proto
    if opset_of(proto) != opset:  # the exporter falls back to its own opset with only a printed warning
        raise ExportError(f"the exporter produced opset {opset_of(proto)}, not the asked {opset}: choose "
                          f"{MIN_OPSET}..{MAX_OPSET}")
    deduplicate_initializers(proto)
    for node in proto.graph.node:  # source locations and stack traces: size without value for deployment
        node.doc_string = ""
        del node.metadata_props[:]
    proto.doc_string = ""
    return proto


def deduplicate_initializers(proto: onnx.ModelProto) -> int:
    """Point every use of identical initializers at one copy; returns how many copies were dropped.

    The exporter's constant folding transposes a weight once per call site, so a block called twice (the
    shared VT-block of eq. (2) and (5), every recurrent turn) could be stored twice; this keeps it once.
    """
    keep: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for init in proto.graph.initializer:
        key = (init.data_type, tuple(init.dims), hashlib.sha256(onnx.numpy_helper.to_array(init).tobytes()).digest())
        if key in keep:
            rename[init.name] = keep[key]
        else:
            keep[key] = init.name
    if not rename:
        return 0
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    kept = [init for init in proto.graph.initializer if init.name not in rename]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return len(rename)


def check_structure(proto: onnx.ModelProto, path: Path, parameter_bytes: int) -> Counter:
    """Loop/If absence, full checker, strict shape inference, and the size budget. Returns op counts."""
    ops = Counter(node.op_type for node in proto.graph.node)
    forbidden = {op: ops[op] for op in FORBIDDEN_OPS if ops[op]}
    if forbidden:
        raise ExportError(f"the graph has control flow {forbidden}: the recurrent loop must be unrolled")
    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    initializer_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    file_bytes = path.stat().st_size
    budget = parameter_bytes * (1 + SIZE_SLACK)
    if initializer_bytes > budget or file_bytes > budget + GRAPH_BYTES:
        raise ExportError(f"{path} is {file_bytes / 1e6:.2f} MB ({initializer_bytes / 1e6:.2f} MB of initializers) for "
                          f"{parameter_bytes / 1e6:.2f} MB of parameters: some weight is stored more than once")
    return ops


def add_metadata(proto: onnx.ModelProto, model: Coreba, opset: int, fp16: bool, parity: ParityReport,
                 optimized: str | None = None, top_k: int | None = None) -> None:
    """What a reader needs to trust and use the file: which graph it holds (raw, or end-to-end with its
    ``top_k``), the model config, opset, precision, and the parity figures measured on THIS file (an optimized
    copy gets its own, never its parent's)."""
    cfg = model.config
    graph = {GRAPH_KEY: "raw"} if top_k is None else {GRAPH_KEY: "end_to_end", TOP_K_KEY: str(top_k)}
    entries = {
        **graph,
        "coreba_version": coreba.__version__,
        "config": cfg.to_json(),
        "num_recurrent": str(cfg.num_recurrent),
        "num_balance_tokens": str(cfg.num_balance_tokens),
        "opset": str(opset),
        "precision": "fp16" if fp16 else "fp32",
        "parity_max_abs_error": json.dumps(parity.worst()),
    }
    if optimized is not None:
        entries["optimized"] = optimized
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)


def optimize_with_onnxruntime(path: Path, output: Path) -> Path:
    """ONNX Runtime's offline graph optimizations (level "extended": fusions that stay portable across
    providers; "all" would add CPU-layout-specific nodes), saved to ``output``."""
    import onnxruntime as ort

    from coreba.engines.onnxruntime_engine import session_options

    ort.InferenceSession(str(path), session_options("extended", optimized_model_path=output),
                         providers=["CPUExecutionProvider"])
    return output


def optimize_with_onnxslim(path: Path, output: Path) -> Path:
    import onnxslim

    slim = onnxslim.slim(str(path))
    onnx.save(slim, str(output))
    return output


OPTIMIZERS = {"ort": optimize_with_onnxruntime, "onnxslim": optimize_with_onnxslim}


def export_onnx(model: Coreba, output: str | Path, opset: int = DEFAULT_OPSET, fp16: bool = False,
                optimize: tuple[str, ...] = (), check: bool = True, end_to_end: bool = False,
                top_k: int = DEFAULT_TOP_K) -> ExportResult:
    """Export ``model`` to ``output`` (one file), check it, and return sizes, op counts and parity.
    ``end_to_end``: the graph with the post-processing inside, returning ``top_k`` moments per query.

    ``output`` and each ``optimize`` copy (``coreba.<kind>.onnx``) are moved into place together, only after
    every check of every file passed; on any failure or interruption none is touched and no temporary is left.
    ``check=False`` reports parity without raising on a miss (benchmarks); structure is always checked."""
    output = Path(output)
    check_opset(opset)
    unknown = [kind for kind in optimize if kind not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {tuple(OPTIMIZERS)}")
    k = answer_top_k(model, top_k) if end_to_end else None
    for path in (output, *(optimized_path(output, kind) for kind in optimize)):
        check_output_path(path)  # before the ~30 s trace
    model = model.eval().float()
    proto = trace_to_onnx(model, opset, fp16, top_k=k)
    parameter_bytes = sum(p.numel() for p in model.parameters()) * (2 if fp16 else 4)
    tolerance, score_tol = (FP16_TOLERANCE, FP16_SCORE_TOLERANCE) if fp16 else (FP32_TOLERANCE, None)
    label = "ONNX Runtime CPU" + (" fp16" if fp16 else "")

    def parity_of(path: Path, name: str) -> ParityReport:
        engine = OnnxRuntimeEngine(path, provider="cpu")
        if k is not None:
            answer_tol = FP16_ANSWER_TOLERANCE if fp16 else FP32_ANSWER_TOLERANCE
            return check_answer_parity(engine.run, model, name + " end-to-end", k, answer_tol,
                                       raise_on_failure=check)
        return check_parity(engine.run, model, name, tolerance, score_tol, raise_on_failure=check)

    def finish(proto: onnx.ModelProto, path: Path, parity: ParityReport, optimized: str | None = None) -> None:
        """Stamp this file's own metadata and prove the file that will be moved into place reads back whole."""
        add_metadata(proto, model, opset, fp16, parity, optimized, top_k=k)
        onnx.save(proto, str(path))
        if opset_of(read_onnx(path)) != opset:
            raise ExportError(f"{path} does not declare opset {opset}")

    with ExitStack() as stack:  # each atomic_file commits at the end of the block, in reverse order
        staged = stack.enter_context(atomic_file(output))
        onnx.save(proto, str(staged))
        ops = check_structure(proto, staged, parameter_bytes)
        parity = parity_of(staged, label)
        finish(proto, staged, parity)
        result = ExportResult(output, staged.stat().st_size, parameter_bytes, ops, parity)
        for kind in optimize:
            target = optimized_path(output, kind)
            staged_copy = stack.enter_context(atomic_file(target))
            OPTIMIZERS[kind](staged, staged_copy)
            copy_parity = parity_of(staged_copy, f"{label} ({kind}-optimized)")
            finish(read_onnx(staged_copy), staged_copy, copy_parity, optimized=kind)
            result.optimized[kind] = target
            result.optimized_parity[kind] = copy_parity
    return result


def parameter_bytes_of(path: str | Path) -> int:
    proto = read_onnx(path)
    return int(sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer))



