"""Long videos and many queries through the real Triton server on 127.0.0.1: the client cuts the Predictor's
windows, sends every row of them in as few batched requests as the model's ``max_batch_size`` allows, and merges
them with the Predictor's code, so its answer is the Predictor's (ONNX Runtime on the raw graph of the same
model); a video within the model's clips is sent as one row, as before."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from coreba import Predictor
from coreba.windows import default_stride, num_windows
from serving.client import CorebaClient, pad_request
from serving.launcher import TritonServer
from serving.spec import SERVED

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository, models=(SERVED,), startup_timeout_s=180) as server:
        yield server


@pytest.fixture(scope="module")
def predictor(served_model) -> Predictor:
    return Predictor.from_pretrained(served_model.raw_onnx_path, engine="onnxruntime")


def _requests_and_rows(server) -> tuple[int, int]:
    """(requests answered, rows inferred) by the served model so far."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(SERVED)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_stats"]["success"]["count"]), int(stats["inference_count"])


def _rows_sent(server, ask, expected_rows: int) -> tuple[object, int, int]:
    """``ask()``'s answer, and the requests and rows the server counted for it. The server updates its statistics
    just after it sends a response, so they are read until ``expected_rows`` show up (or 10 s pass)."""
    before = _requests_and_rows(server)
    answer = ask()
    deadline = time.monotonic() + 10
    while True:
        requests, rows = (a - b for a, b in zip(_requests_and_rows(server), before))
        if rows >= expected_rows or time.monotonic() > deadline:
            return answer, requests, rows
        time.sleep(0.05)


@pytest.mark.parametrize("protocol,shared_memory", [("http", False), ("grpc", False), ("grpc", True)])
def test_a_long_video_gets_the_predictors_answer(server, protocol, shared_memory, predictor, make_query,
                                                 same_answer):
    url = server.http_url if protocol == "http" else server.grpc_url
    window = predictor.config.max_video_len
    with CorebaClient(url, protocol, shared_memory=shared_memory) as client:
        assert client.windows.clip_length == predictor.config.clip_length
        top_k, batch = client.windows.top_k, client.windows.max_batch_size
        for seed, clips in enumerate([window + 1, 100, 187]):
            query = make_query(clips, 7, seed)
            windows = num_windows(clips, window, default_stride(window))
            got, requests, rows = _rows_sent(server, lambda q=query: client.query(q.video, q.text, q.duration),
                                             windows)
            assert (requests, rows) == (math.ceil(windows / batch), windows)  # batched, never a window at a time
            (want,) = predictor.predict([query.video], [query.text], [query.duration], top_k=top_k)
            same_answer(got, want)
            assert len(got.saliency) == clips  # one score per clip of the whole video
            assert all(0.0 <= s <= e <= query.duration for s, e, _ in got.moments)


def test_windows_follow_stride_and_nms_threshold(server, predictor, make_query, same_answer):
    query = make_query(100, 5, 11)
    with CorebaClient(server.http_url) as client:
        for stride, iou in [(predictor.config.max_video_len, 0.5), (7, 0.3)]:
            got = client.query(query.video, query.text, query.duration, stride=stride, iou_threshold=iou)
            (want,) = predictor.predict([query.video], [query.text], [query.duration], top_k=client.windows.top_k,
                                        stride=stride, iou_threshold=iou)
            same_answer(got, want)
        with pytest.raises(ValueError, match="stride must be in 1..30"):
            client.query(query.video, query.text, query.duration, stride=0)


@pytest.mark.parametrize("clips", [100, 17])
def test_search_answers_each_query_as_the_predictor(server, clips, predictor, make_query, same_answer):
    video = make_query(clips, 1, 20)
    texts = [make_query(1, tokens, 21 + tokens).text for tokens in (3, 12, 6)]
    window = predictor.config.max_video_len
    with CorebaClient(server.grpc_url, "grpc") as client:
        expected_rows = num_windows(clips, window, default_stride(window)) * len(texts)
        got, requests, rows = _rows_sent(server, lambda: client.search(video.video, texts, video.duration),
                                         expected_rows)
        assert (requests, rows) == (math.ceil(expected_rows / client.windows.max_batch_size), expected_rows)
        want = predictor.search(video.video, texts, video.duration, top_k=client.windows.top_k)
        assert len(got) == len(texts)
        for got_q, want_q in zip(got, want, strict=True):
            same_answer(got_q, want_q)
            assert len(got_q.saliency) == clips


def test_a_video_within_the_model_is_sent_as_before(server, make_query, reference):
    query = make_query(30, 12, 3)
    with CorebaClient(server.http_url) as client:
        got, requests, rows = _rows_sent(server, lambda: client.query(query.video, query.text, query.duration), 1)
        assert (requests, rows) == (1, 1)
        assert got == client.infer(pad_request(query.video, query.text, query.duration, client.layout))[0]
        np.testing.assert_allclose(got.saliency, reference(query).saliency, atol=1e-4, rtol=0)
