"""Bad requests against the real server: each gets an error response naming the problem (from the one-step
model's numpy checks or from Triton's own shape/dtype/batch checks), and the server stays healthy and
answers the next good request correctly."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serving.client import CorebaClient, make_inputs, pad_request
from serving.launcher import TritonServer
from serving.spec import DURATION, SERVED, SERVED_INPUTS

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository, startup_timeout_s=120) as server:
        yield server


@pytest.fixture(scope="module")
def good(make_query, served_model):
    """A valid padded request (as the client builds it) and its query."""
    from serving.client import InputLayout

    cfg = served_model.config
    layout = InputLayout(cfg.max_video_len, cfg.video_dim, cfg.max_text_len, cfg.text_dim)
    query = make_query(13, 4, 42)
    return query, pad_request(query.video, query.text, query.duration, layout)


def _raw_infer(module, url: str, arrays: dict[str, np.ndarray], model: str = SERVED, dtypes: dict | None = None):
    """Send ``arrays`` as they are (no client-side checks): wrong shapes and dtypes reach the server."""
    client = module.InferenceServerClient(url)
    try:
        inputs = []
        for name, array in arrays.items():
            dtype = (dtypes or {}).get(name) or {np.float32: "FP32", np.bool_: "BOOL", np.float64: "FP64",
                                                 np.int32: "INT32"}[array.dtype.type]
            tensor = module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs)
    finally:
        client.close()


def _with(arrays: dict[str, np.ndarray], **changes: np.ndarray) -> dict[str, np.ndarray]:
    return {**{k: v.copy() for k, v in arrays.items()}, **changes}


def _nan_video(a):
    v = a["video_feats"].copy()
    v[0, 2, 5] = np.nan
    return v


# (case, change to the good request, words the error must contain)
BAD_REQUESTS = [
    ("wrong feature dim", lambda a: {"video_feats": np.zeros((1, 30, 41), np.float32)}, ["video_feats", "shape"]),
    ("wrong rank", lambda a: {"text_feats": np.zeros((1, 12), np.float32)}, ["text_feats", "shape"]),
    ("wrong dtype", lambda a: {"video_feats": a["video_feats"].astype(np.float64)}, ["video_feats", "FP64"]),
    ("mask not bool", lambda a: {"text_mask": a["text_mask"].astype(np.int32)}, ["text_mask", "INT32"]),
    ("NaN features", lambda a: {"video_feats": _nan_video(a)}, ["video_feats", "NaN"]),
    ("Inf in the query", lambda a: {"text_feats": np.full_like(a["text_feats"], np.inf)}, ["text_feats", "Inf"]),
    ("empty query", lambda a: {"text_mask": np.zeros((1, 12), bool)}, ["empty query"]),
    ("no valid clip", lambda a: {"video_mask": np.zeros((1, 30), bool)}, ["no valid clip"]),
    ("too many clips", lambda a: {"video_feats": np.zeros((1, 31, 40), np.float32),
                                  "video_mask": np.ones((1, 31), bool)}, ["unexpected shape", "got [1,31"]),
    ("zero duration", lambda a: {DURATION: np.zeros((1, 1), np.float32)}, ["duration"]),
    ("NaN duration", lambda a: {DURATION: np.full((1, 1), np.nan, np.float32)}, ["duration", "finite"]),
    ("batch over the maximum", lambda a: {k: np.repeat(v, 9, axis=0) for k, v in a.items()}, ["batch", "8"]),
]


@pytest.mark.parametrize("case,change,words", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_request_gets_named_error(server, good, protocol, case, change, words, reference, same_answer):
    module, url = (httpclient, server.http_url) if protocol == "http" else (grpcclient, server.grpc_url)
    query, arrays = good
    with pytest.raises(InferenceServerException) as info:
        _raw_infer(module, url, _with(arrays, **change(arrays)))
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{case}: {word!r} not in {message!r}"
    # the server is healthy and the next good request is answered right
    with CorebaClient(url, protocol) as client:
        assert client.client.is_server_ready()
        same_answer(client.infer(arrays)[0], reference(query))


def test_missing_input(server, good):
    _, arrays = good
    partial = {name: arrays[name] for name in SERVED_INPUTS if name != "text_mask"}
    with pytest.raises(InferenceServerException, match="text_mask"):
        _raw_infer(httpclient, server.http_url, partial)


def test_bad_request_in_a_batch_fails_alone(server, good, reference, same_answer):
    """A bad request batched with good ones gets its error; its batch-mates are still answered right."""
    import asyncio

    from serving.client import AsyncCorebaClient

    query, arrays = good
    bad = _with(arrays, text_mask=np.zeros((1, 12), bool))

    async def ask():
        client = await AsyncCorebaClient.connect(server.grpc_url, "grpc")
        try:
            return await asyncio.gather(*(client.infer(bad if i % 4 == 0 else arrays) for i in range(16)),
                                        return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(asyncio.wait_for(ask(), timeout=60))
    for i, result in enumerate(results):
        if i % 4 == 0:
            assert isinstance(result, InferenceServerException) and "empty query" in str(result)
        else:
            same_answer(result[0], reference(query))


def test_client_refuses_what_it_cannot_pad(served_model, make_query):
    from serving.client import InputLayout

    cfg = served_model.config
    layout = InputLayout(cfg.max_video_len, cfg.video_dim, cfg.max_text_len, cfg.text_dim)
    query = make_query(cfg.max_video_len + 1, 3, 0)
    with pytest.raises(ValueError, match="1 to 30"):
        pad_request(query.video, query.text, query.duration, layout)
    with pytest.raises(ValueError, match=r"\(L, 24\)"):
        pad_request(query.video[:5], query.video[:2], 10.0, layout)
    with pytest.raises(ValueError, match="duration"):
        pad_request(query.video[:5], query.text, -1.0, layout)


def test_make_inputs_orders_served_inputs(good):
    _, arrays = good
    assert [t.name() for t in make_inputs(httpclient, arrays)] == list(SERVED_INPUTS)
