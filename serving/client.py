"""Call the served COREBA model: one video's features, one query's features and the video's duration in;
moments ``[[start_s, end_s, score], ...]`` and per-clip saliency out (a :class:`QueryResult`).
:meth:`CorebaClient.search` asks several queries of one video at once.

A video of any length: one longer than the served model's clips is cut into the Predictor's windows and merged
by the Predictor's code (:mod:`coreba.schedule`, :mod:`coreba.windows`), so the client's answer is the
Predictor's. Every (window, query) row goes into requests of up to the model's ``max_batch_size`` rows (one
request when they fit); the graph answers each row in its window's own seconds, mapped to the video's by the
merge. A video within the model's clips is sent as one row, exactly as before.

HTTP or gRPC, sync (:class:`CorebaClient`) or asyncio (:class:`AsyncCorebaClient`). The client pads both
sequences to the lengths the model declares (read once from the server's model metadata) and sends the
masks, which is what lets the server batch requests of different lengths exactly. ``model``: ``coreba`` (the
default), or ``coreba_onnx`` / ``coreba_trt`` on a GPU server: they take and return the same tensors. The sync
client on the server's host can pass the tensors through system shared memory (``shared_memory=True``,
:mod:`serving.shared_memory`) instead of the socket. CLI::

    python -m serving.client --video video.npz --text query.npz --duration 150 [--url 127.0.0.1:8000]
        [--protocol http|grpc] [--async | --shared-memory] [--model coreba]

``--video``: an ``.npz`` with key ``features`` (L_v, D_v) (the model's clip features, as the dataset
builds them); ``--text``: key ``last_hidden_state`` (L_t, D_t). Prints the answer as JSON; exits 1 on any
error (bad file, too many clips, a server error), with the message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from coreba.answer import unpack_answer
from coreba.postprocess import QueryResult
from coreba.schedule import Answering, Query, Row, answer_queries, row_durations
from coreba.windows import DEFAULT_NMS_IOU, Window, check_window_options, write_window
from serving.spec import ANSWER_OUTPUTS, CLIP_LENGTH_PARAMETER, DURATION, SERVED, SERVED_INPUTS

PROTOCOLS = ("http", "grpc")
TRITON_DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL"}


@dataclass(frozen=True)
class InputLayout:
    """The padded lengths and feature dims the served model expects (its input dims, from the server)."""

    max_clips: int
    video_dim: int
    max_tokens: int
    text_dim: int

    @classmethod
    def from_metadata(cls, metadata: Mapping) -> InputLayout:
        """From ``get_model_metadata`` (HTTP dict, or gRPC ``as_json=True`` whose int64 dims are strings)."""
        shapes = {t["name"]: [int(d) for d in t["shape"]] for t in metadata["inputs"]}
        (_, max_clips, video_dim), (_, max_tokens, text_dim) = shapes["video_feats"], shapes["text_feats"]
        return cls(max_clips, video_dim, max_tokens, text_dim)


@dataclass(frozen=True)
class ServedWindows:
    """What the served model fixes for a long video's windows: rows per request (its ``max_batch_size``), moments
    per row (the graph's K), and its clip length in seconds (None from a repository built before long videos)."""

    max_batch_size: int
    top_k: int
    clip_length: float | None

    @classmethod
    def from_server(cls, config: Mapping, metadata: Mapping) -> ServedWindows:
        """From ``get_model_config`` and ``get_model_metadata`` (HTTP dicts, or gRPC ``as_json=True``)."""
        config = config.get("config", config)  # gRPC wraps the config in the response
        clip_length = config.get("parameters", {}).get(CLIP_LENGTH_PARAMETER, {}).get("string_value")
        (moments,) = [t for t in metadata["outputs"] if t["name"] == "moments"]
        return cls(max(1, int(config.get("max_batch_size", 1))), int(moments["shape"][1]),
                   None if clip_length is None else float(clip_length))

    def answering(self, layout: InputLayout, num_clips: int, stride: int | None,
                  iou_threshold: float) -> Answering:
        """The Predictor's options for a video of ``num_clips`` (exact times, the graph's K moments)."""
        if self.clip_length is None and num_clips > layout.max_clips:
            raise ValueError(f"the video has {num_clips} clips, more than the served {layout.max_clips}, and the "
                             f"served model's config has no '{CLIP_LENGTH_PARAMETER}' parameter to place windows "
                             "with: rebuild the repository with serving/build_repository.py")
        stride, iou_threshold = check_window_options(stride, iou_threshold, layout.max_clips)
        # the clip length is read only to place windows: 0.0 stands for "none given" when the video fits one
        return Answering(self.top_k, "exact", layout.max_clips, stride, iou_threshold, self.clip_length or 0.0)


def check_features(name: str, feats: np.ndarray, dim: int, max_rows: int | None = None) -> np.ndarray:
    """``feats`` as (L, dim) float32 with L >= 1 (and <= ``max_rows`` when given), or a ValueError naming it."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != dim:
        raise ValueError(f"{name} must have shape (L, {dim}), got {feats.shape}")
    if max_rows is not None and not 1 <= feats.shape[0] <= max_rows:
        raise ValueError(f"{name} has {feats.shape[0]} rows; the server takes 1 to {max_rows}")
    if feats.shape[0] < 1:
        raise ValueError(f"{name} has 0 rows; it needs at least 1")
    return feats


def check_duration(duration: float) -> float:
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    return float(duration)


def row_request(rows: Sequence[Row], videos: Sequence[np.ndarray], texts: Sequence[np.ndarray],
                layout: InputLayout) -> dict[str, np.ndarray]:
    """Rows (a query over one window of its video, :mod:`coreba.schedule`) as one request padded to the model's
    lengths, with masks; each row's duration is its window's, the seconds the graph answers in."""
    B = len(rows)
    video = np.zeros((B, layout.max_clips, layout.video_dim), dtype=np.float32)
    video_mask = np.zeros((B, layout.max_clips), dtype=bool)
    text = np.zeros((B, layout.max_tokens, layout.text_dim), dtype=np.float32)
    text_mask = np.zeros((B, layout.max_tokens), dtype=bool)
    for i, row in enumerate(rows):
        write_window(video[i], videos[row.video], row.window)
        video_mask[i, : row.window.num_clips] = True
        tokens = texts[row.text]
        text[i, : len(tokens)], text_mask[i, : len(tokens)] = tokens, True
    return {"video_feats": video, "video_mask": video_mask, "text_feats": text, "text_mask": text_mask,
            DURATION: row_durations(rows).astype(np.float32)[:, None]}


def pad_request(video_feats: np.ndarray, text_feats: np.ndarray, duration: float,
                layout: InputLayout) -> dict[str, np.ndarray]:
    """One query as a batch of 1 padded to the model's lengths, with masks and the duration (seconds)."""
    video = check_features("video_feats", video_feats, layout.video_dim, layout.max_clips)
    text = check_features("text_feats", text_feats, layout.text_dim, layout.max_tokens)
    whole = Window(0, len(video), 0.0, check_duration(duration), whole=True)
    return row_request([Row(0, 0, 0, whole)], [video], [text], layout)


def protocol_module(protocol: str, use_async: bool = False) -> ModuleType:
    """``tritonclient.http``, ``tritonclient.grpc`` or their ``.aio`` variants."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return importlib.import_module(f"tritonclient.{protocol}" + (".aio" if use_async else ""))


def _client_options(protocol: str, use_async: bool, timeout_s: float) -> dict:
    """Client-side timeouts: HTTP sets them on the connection, gRPC per call (:func:`_infer_options`)."""
    if protocol == "grpc":
        return {}
    return {"conn_timeout": timeout_s} if use_async else {"connection_timeout": timeout_s, "network_timeout": timeout_s}


def _infer_options(protocol: str, timeout_s: float) -> dict:
    return {"client_timeout": timeout_s} if protocol == "grpc" else {}


def _metadata_options(protocol: str) -> dict:
    return {"as_json": True} if protocol == "grpc" else {}  # gRPC returns a protobuf message otherwise


def make_inputs(module: ModuleType, arrays: Mapping[str, np.ndarray], with_data: bool = True) -> list:
    """``InferInput`` objects (of the protocol ``module``) for the model's inputs, in their order; with
    ``with_data=False`` only their names, shapes and dtypes (the data goes through shared memory)."""
    inputs = []
    for name in SERVED_INPUTS:
        array = np.asarray(arrays[name])
        tensor = module.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype])
        if with_data:
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
        inputs.append(tensor)
    return inputs


def output_specs(metadata: Mapping) -> dict[str, tuple[np.dtype, list[int]]]:
    """Each answer output's dtype and shape without the batch, from ``get_model_metadata`` (as JSON)."""
    from tritonclient.utils import triton_to_np_dtype

    shapes = {t["name"]: (triton_to_np_dtype(t["datatype"]), [int(d) for d in t["shape"][1:]])
              for t in metadata["outputs"]}
    return {name: shapes[name] for name in ANSWER_OUTPUTS}


class CorebaClient:
    """Synchronous client of the served model (default ``coreba``); one connection, reused for every query.
    ``shared_memory``: pass tensors through system shared memory (same host only; see the module docstring)."""

    def __init__(self, url: str = "127.0.0.1:8000", protocol: str = "http", timeout_s: float = 60.0,
                 model: str = SERVED, shared_memory: bool = False) -> None:
        self.protocol, self.timeout_s, self.model = protocol, timeout_s, model
        self.module = protocol_module(protocol)
        self.client = self.module.InferenceServerClient(url, **_client_options(protocol, False, timeout_s))
        metadata = self.client.get_model_metadata(model, **_metadata_options(protocol))
        self.layout = InputLayout.from_metadata(metadata)
        self.windows = ServedWindows.from_server(self.client.get_model_config(model, **_metadata_options(protocol)),
                                                 metadata)
        self.outputs = [self.module.InferRequestedOutput(name) for name in ANSWER_OUTPUTS]
        self.shared_memory = None
        if shared_memory:
            from serving.shared_memory import SharedMemoryIO

            self.shared_memory = SharedMemoryIO(self.client, self.module, output_specs(metadata))

    def infer(self, arrays: Mapping[str, np.ndarray]) -> list[QueryResult]:
        """Send already padded inputs (B queries); the answer of each query."""
        options = _infer_options(self.protocol, self.timeout_s)
        if self.shared_memory is None:
            response = self.client.infer(self.model, make_inputs(self.module, arrays), outputs=self.outputs,
                                         **options)
            return unpack_answer({name: response.as_numpy(name) for name in ANSWER_OUTPUTS})
        inputs = make_inputs(self.module, arrays, with_data=False)
        outputs = [self.module.InferRequestedOutput(name) for name in ANSWER_OUTPUTS]
        self.shared_memory.bind(inputs, arrays, outputs)
        self.client.infer(self.model, inputs, outputs=outputs, **options)
        return unpack_answer(self.shared_memory.read())

    def query(self, video_feats: np.ndarray, text_feats: np.ndarray, duration: float, *, stride: int | None = None,
              iou_threshold: float = DEFAULT_NMS_IOU) -> QueryResult:
        """One query over a video of any length (``stride``, ``iou_threshold``: its windows, as the Predictor's)."""
        return self.search(video_feats, [text_feats], duration, stride=stride, iou_threshold=iou_threshold)[0]

    def search(self, video_feats: np.ndarray, text_feats: Sequence[np.ndarray], duration: float, *,
               stride: int | None = None, iou_threshold: float = DEFAULT_NMS_IOU) -> list[QueryResult]:
        """Q queries over ONE video of any length, one answer per query: its rows (windows x queries) go in as
        few requests as the model's ``max_batch_size`` allows, each query merged as ``Predictor.search`` does."""
        video = check_features("video_feats", video_feats, self.layout.video_dim)
        if isinstance(text_feats, np.ndarray) or not text_feats:
            raise ValueError("text_feats must be a non-empty list of (L, D) query arrays")
        texts = [check_features(f"text_feats[{q}]", t, self.layout.text_dim, self.layout.max_tokens)
                 for q, t in enumerate(text_feats)]
        answering = self.windows.answering(self.layout, len(video), stride, iou_threshold)
        return answer_queries([len(video)], [check_duration(duration)], [Query(0, q) for q in range(len(texts))],
                              lambda rows: self.infer(row_request(rows, [video], texts, self.layout)),
                              answering, self.windows.max_batch_size)

    def close(self) -> None:
        try:
            if self.shared_memory is not None:
                self.shared_memory.close()
        finally:
            self.client.close()

    def __enter__(self) -> CorebaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncCorebaClient:
    """asyncio client of the served model; create it with ``await AsyncCorebaClient.connect(url, protocol)``.
    Many requests in flight at once, so no shared memory (its regions hold one request at a time). One request per
    query, so videos within the model's clips only (:class:`CorebaClient` windows longer ones)."""

    def __init__(self, module: ModuleType, client, protocol: str, layout: InputLayout, timeout_s: float,
                 model: str = SERVED) -> None:
        self.module, self.client, self.protocol, self.model = module, client, protocol, model
        self.layout, self.timeout_s = layout, timeout_s
        self.outputs = [module.InferRequestedOutput(name) for name in ANSWER_OUTPUTS]

    @classmethod
    async def connect(cls, url: str = "127.0.0.1:8000", protocol: str = "http", timeout_s: float = 60.0,
                      model: str = SERVED) -> AsyncCorebaClient:
        module = protocol_module(protocol, use_async=True)
        client = module.InferenceServerClient(url, **_client_options(protocol, True, timeout_s))
        metadata = await client.get_model_metadata(model, **_metadata_options(protocol))
        return cls(module, client, protocol, InputLayout.from_metadata(metadata), timeout_s, model)

    async def infer(self, arrays: Mapping[str, np.ndarray]) -> list[QueryResult]:
        response = await self.client.infer(self.model, make_inputs(self.module, arrays), outputs=self.outputs,
                                           **_infer_options(self.protocol, self.timeout_s))
        return unpack_answer({name: response.as_numpy(name) for name in ANSWER_OUTPUTS})

    async def query(self, video_feats: np.ndarray, text_feats: np.ndarray, duration: float) -> QueryResult:
        return (await self.infer(pad_request(video_feats, text_feats, duration, self.layout)))[0]

    async def close(self) -> None:
        await self.client.close()


def _load_features(path: Path, key: str, dim: int) -> np.ndarray:
    from coreba.data.qvhighlights import load_feature_array

    return load_feature_array(path, key, expected_dim=dim)


async def _query_async(args: argparse.Namespace) -> QueryResult:
    client = await AsyncCorebaClient.connect(args.url, args.protocol, args.timeout, args.model)
    try:
        video = _load_features(args.video, "features", client.layout.video_dim)
        text = _load_features(args.text, "last_hidden_state", client.layout.text_dim)
        return await client.query(video, text, args.duration)
    finally:
        await client.close()


def _query_sync(args: argparse.Namespace) -> QueryResult:
    with CorebaClient(args.url, args.protocol, args.timeout, args.model, args.shared_memory) as client:
        video = _load_features(args.video, "features", client.layout.video_dim)
        text = _load_features(args.text, "last_hidden_state", client.layout.text_dim)
        return client.query(video, text, args.duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ask the served COREBA model for a query's moments and saliency.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--video", required=True, type=Path, help=".npz with key 'features' (L_v, D_v)")
    parser.add_argument("--text", required=True, type=Path, help=".npz with key 'last_hidden_state' (L_t, D_t)")
    parser.add_argument("--duration", required=True, type=float, help="the video's duration in seconds")
    parser.add_argument("--url", default=None, help="host:port (default 127.0.0.1:8000 HTTP, :8001 gRPC)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--async", dest="use_async", action="store_true", help="use the asyncio client")
    mode.add_argument("--shared-memory", action="store_true",
                      help="pass the tensors through system shared memory (client on the server's host)")
    parser.add_argument("--model", default=SERVED, help="served model: coreba, coreba_onnx or coreba_trt")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)
    args.url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    try:
        result = asyncio.run(_query_async(args)) if args.use_async else _query_sync(args)
    except Exception as err:  # a CLI: every failure becomes a message and exit code 1
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_submission()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
