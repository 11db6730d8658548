"""Call the served COREBA model: one video's features, one query's features and the video's duration in;
moments ``[[start_s, end_s, score], ...]`` and per-clip saliency out (a :class:`QueryResult`).

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from coreba.answer import unpack_answer
from coreba.postprocess import QueryResult
from serving.spec import ANSWER_OUTPUTS, DURATION, SERVED, SERVED_INPUTS

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


def _pad(name: str, feats: np.ndarray, length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != dim:
        raise ValueError(f"{name} must have shape (L, {dim}), got {feats.shape}")
    if not 1 <= feats.shape[0] <= length:
        raise ValueError(f"{name} has {feats.shape[0]} rows; the server takes 1 to {length}")
    padded = np.zeros((1, length, dim), dtype=np.float32)
    padded[0, : feats.shape[0]] = feats
    mask = np.zeros((1, length), dtype=bool)
    mask[0, : feats.shape[0]] = True
    return padded, mask


def pad_request(video_feats: np.ndarray, text_feats: np.ndarray, duration: float,
                layout: InputLayout) -> dict[str, np.ndarray]:
    """One query as a batch of 1 padded to the model's lengths, with masks and the duration (seconds)."""
    video, video_mask = _pad("video_feats", video_feats, layout.max_clips, layout.video_dim)
    text, text_mask = _pad("text_feats", text_feats, layout.max_tokens, layout.text_dim)
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    return {"video_feats": video, "video_mask": video_mask, "text_feats": text, "text_mask": text_mask,
            DURATION: np.array([[duration]], dtype=np.float32)}


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

    def query(self, video_feats: np.ndarray, text_feats: np.ndarray, duration: float) -> QueryResult:
        return self.infer(pad_request(video_feats, text_feats, duration, self.layout))[0]

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
    Many requests in flight at once, so no shared memory (its regions hold one request at a time)."""

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
