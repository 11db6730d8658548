"""Read an ONNX file, or say in one line which file is not a (complete) ONNX model: the ONE reader.

Every place that opens an ONNX file (the Predictor, the exporter, the TensorRT build, the serving repository,
the benchmarks) reads it here. A truncated file otherwise surfaces as protobuf's ``DecodeError`` naming no file,
and an empty or cut-at-a-field-boundary file parses "successfully" into an incomplete model; both are an
:class:`OnnxFileError` naming the file here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from coreba.config import ConfigError, CorebaConfig

if TYPE_CHECKING:
    import onnx

CONFIG_KEY = "config"  # the metadata entry holding the model's CorebaConfig (JSON), written by the exporter
GRAPH_KEY = "graph"  # which graph the file holds: "raw" or "end_to_end" (absent: raw)
TOP_K_KEY = "top_k"  # an end-to-end graph's moments per query
GRAPHS = ("raw", "end_to_end")


class OnnxFileError(ValueError):
    """A file that is not a valid, complete ONNX model, or lacks the metadata coreba needs."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def read_onnx(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    """The model in ``path``, checked to be whole (``onnx.checker``, a graph with outputs, an opset).

    ``load_weights=False`` leaves external weight files unread (metadata and structure only)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    try:
        proto = onnx.load(str(path), load_external_data=load_weights)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise OnnxFileError(f"{path} is not a valid ONNX model (truncated or corrupt?): {_first_line(err)}") from None
    if not proto.HasField("graph") or not proto.graph.output or not proto.opset_import:
        raise OnnxFileError(f"{path} is not a complete ONNX model (no graph, outputs or opset: truncated?)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise OnnxFileError(f"{path} is not a valid ONNX model: {_first_line(err)}") from None
    return proto


def metadata_of(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` (the exporter's config, opset, parity figures)."""
    return metadata_of(read_onnx(path, load_weights=False))


def config_of(metadata: Mapping[str, str], path: str | Path) -> CorebaConfig:
    """The :class:`CorebaConfig` in the metadata of the ONNX file ``path`` (already read)."""
    if CONFIG_KEY not in metadata:
        raise OnnxFileError(f"{path} has no '{CONFIG_KEY}' metadata: export it with export/to_onnx.py, which "
                            "records the model config")
    try:
        return CorebaConfig.from_json(metadata[CONFIG_KEY])
    except ConfigError as err:
        raise OnnxFileError(f"{path}: its '{CONFIG_KEY}' metadata is not a valid model config: {err}") from None


def read_model_config(path: str | Path) -> CorebaConfig:
    """The :class:`CorebaConfig` the exporter stored in the file's metadata, so every consumer (Predictor,
    TensorRT build, serving) describes the model exactly as it was exported."""
    return config_of(read_metadata(path), path)


def graph_of(metadata: Mapping[str, str]) -> str:
    """Which graph a file holds: "raw" (the model's outputs) or "end_to_end" (the answer; see
    ``export/to_onnx.py --end-to-end``). Files written before the entry existed hold the raw graph."""
    return metadata.get(GRAPH_KEY, "raw")


def top_k_of(metadata: Mapping[str, str], path: str | Path) -> int | None:
    """K (moments per query) of an end-to-end graph, None for the raw graph."""
    if graph_of(metadata) != "end_to_end":
        return None
    try:
        top_k = int(metadata[TOP_K_KEY])
    except (KeyError, ValueError):
        top_k = 0
    if top_k < 1:
        raise OnnxFileError(f"{path} is an end-to-end graph without a valid '{TOP_K_KEY}' metadata entry "
                            f"(got {metadata.get(TOP_K_KEY)!r})")
    return top_k


def end_to_end_top_k(path: str | Path) -> int | None:
    """K of the end-to-end graph in ``path`` (its metadata ``top_k``), or None for the raw graph."""
    return top_k_of(read_metadata(path), path)


def read_graph(path: str | Path, graph: str) -> tuple[CorebaConfig, dict[str, str]]:
    """The config and metadata of ``path``, which must hold ``graph`` ("raw" or "end_to_end"); else an
    :class:`OnnxFileError` saying how to export the one needed."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    metadata = read_metadata(path)
    found = graph_of(metadata)
    if found != graph:
        hint = "export/to_onnx.py --end-to-end" if graph == "end_to_end" else "export/to_onnx.py (no --end-to-end)"
        raise OnnxFileError(f"{path} holds the {found} graph; this needs the {graph} graph: export it with {hint}")
    top_k_of(metadata, path)  # an end-to-end graph states its K
    return config_of(metadata, path), metadata
