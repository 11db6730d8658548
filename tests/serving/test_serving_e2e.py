"""End to end against the real Triton server on 127.0.0.1: the one-step model's answers equal eager PyTorch +
the same post-processing over HTTP and gRPC (sync and asyncio, and through system shared memory), concurrent
requests are batched by the dynamic batcher and still answered right, the baseline (the two-step path the load
test compares with) answers the same, and the client CLI works over npz files."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from serving.baseline import BASELINE
from serving.client import AsyncCorebaClient, CorebaClient, main
from serving.launcher import TritonServer
from serving.spec import SERVED

pytestmark = pytest.mark.server

LENGTHS = [(30, 12), (1, 1), (17, 5), (29, 12), (8, 3)]  # (clips, tokens): max, min and in between
CONCURRENT = 40


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository, models=(SERVED, BASELINE), startup_timeout_s=180) as server:
        yield server


@pytest.mark.parametrize("protocol,model,shared_memory", [
    ("http", SERVED, False), ("grpc", SERVED, False), ("http", SERVED, True), ("grpc", SERVED, True),
    ("grpc", BASELINE, False)])
def test_answers_match_eager(server, protocol, model, shared_memory, make_query, reference, same_answer):
    url = server.http_url if protocol == "http" else server.grpc_url
    with CorebaClient(url, protocol, model=model, shared_memory=shared_memory) as client:
        assert (client.layout.max_clips, client.layout.max_tokens) == (30, 12)
        for seed, (clips, tokens) in enumerate(LENGTHS):
            query = make_query(clips, tokens, seed)
            got = client.query(query.video, query.text, query.duration)
            same_answer(got, reference(query))
            assert all(0.0 <= s <= e <= query.duration for s, e, _ in got.moments)
            scores = [m[2] for m in got.moments]
            assert scores == sorted(scores, reverse=True)


def _execution_stats(server, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of ``model`` so far."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_count"]), int(stats["execution_count"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_concurrent_requests_are_batched(server, protocol, make_query, reference, same_answer):
    rng = np.random.default_rng(7)
    queries = [make_query(int(rng.integers(1, 31)), int(rng.integers(1, 13)), 100 + i) for i in range(CONCURRENT)]
    before = _execution_stats(server, SERVED)

    async def ask_all():
        client = await AsyncCorebaClient.connect(server.grpc_url if protocol == "grpc" else server.http_url,
                                                 protocol)
        try:
            return await asyncio.gather(*(client.query(q.video, q.text, q.duration) for q in queries))
        finally:
            await client.close()

    answers = asyncio.run(asyncio.wait_for(ask_all(), timeout=120))
    inferences, executions = (a - b for a, b in zip(_execution_stats(server, SERVED), before))
    assert inferences == CONCURRENT
    assert executions < inferences, f"no batching: {executions} executions for {inferences} requests"
    for query, got in zip(queries, answers):
        same_answer(got, reference(query))


def _registered_regions(server) -> list[str]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return [region["name"] for region in client.get_system_shared_memory_status()]
    finally:
        client.close()


def test_shared_memory_regions_are_registered_then_released(server, make_query, reference, same_answer):
    """The regions carry a request's tensors (the server sees them registered, sized for the request), are
    grown for a larger batch, and are gone from the server and from /dev/shm once the client closes."""
    from pathlib import Path

    from serving.client import pad_request

    query = make_query(30, 12, 5)
    with CorebaClient(server.grpc_url, "grpc", shared_memory=True) as client:
        same_answer(client.query(query.video, query.text, query.duration), reference(query))
        regions = client.shared_memory.regions
        assert sorted(r.name for r in regions.values()) == sorted(n for n in _registered_regions(server)
                                                                  if n.startswith(client.shared_memory.prefix))
        small = regions["inputs"].byte_size
        padded = pad_request(query.video, query.text, query.duration, client.layout)
        answers = client.infer({name: np.repeat(array, 3, axis=0) for name, array in padded.items()})
        assert len(answers) == 3 and regions["inputs"].byte_size > 2 * small  # grown for the batch of 3
        for got in answers:
            same_answer(got, reference(query))
        keys = [r.key for r in regions.values()]
    assert not [n for n in _registered_regions(server) if n.startswith(client.shared_memory.prefix)]
    assert not any(Path("/dev/shm", key.lstrip("/")).exists() for key in keys)


@pytest.mark.parametrize("transport,concurrency", [("socket", 1), ("shm", 1), ("socket", 3), ("shm", 3)])
def test_interleaved_times_the_engine_and_the_served_model(server, served_model, repository, transport,
                                                           concurrency):
    """The load test's interleaved measurement really sends its requests to the server (its inference count
    grows by every call, the warm-up blocks included) from ``concurrency`` clients, and times both sides."""
    import tritonclient.grpc as grpcclient

    from serving.interleaved import interleaved
    from serving.perf import layout_of
    from serving.perf_analyzer import make_requests

    stats = grpcclient.InferenceServerClient(server.grpc_url)

    def count() -> int:
        return int(stats.get_inference_statistics(SERVED, as_json=True)["model_stats"][0]["inference_count"])

    before = count()
    result = interleaved(served_model.raw_onnx_path, server.grpc_url, "grpc", transport, concurrency,
                         make_requests(layout_of(repository), 6), threads=1, pairs=3, block=4, discard=1,
                         burst_s=0.4, warm_s=0.1)
    answered = count() - before
    stats.close()
    if concurrency == 1:  # 3 pairs of 4 requests, and 2 to warm up
        assert answered == 3 * 4 + 2
    else:  # each burst's answers in its 0.3 s window, and more: the warm-up, the window's first 0.1 s
        in_windows = round(sum(rate * 0.3 for block in result.served_blocks for rate in block))
        assert in_windows > 0 and answered >= in_windows + 2 * concurrency
    assert [len(b) for b in result.engine_blocks] == [3] * 3
    assert [len(b) for b in result.served_blocks] == [3 if concurrency == 1 else 1] * 3
    assert result.engine > 0 and result.served > 0 and len(result.pair_ratios()) == 3

def test_client_cli(server, make_query, reference, same_answer, tmp_path, capsys):
    query = make_query(21, 7, 3)
    np.savez(tmp_path / "video.npz", features=query.video)
    np.savez(tmp_path / "query.npz", last_hidden_state=query.text)
    args = ["--video", str(tmp_path / "video.npz"), "--text", str(tmp_path / "query.npz"),
            "--duration", str(query.duration)]
    for extra in (["--url", server.http_url], ["--url", server.grpc_url, "--protocol", "grpc", "--async"],
                  ["--url", server.http_url, "--shared-memory"]):
        assert main(args + extra) == 0
        line = json.loads(capsys.readouterr().out)
        got = type(reference(query))(line["pred_relevant_windows"], line["pred_saliency_scores"])
        same_answer(got, reference(query))
    assert main(["--video", str(tmp_path / "missing.npz"), "--text", str(tmp_path / "query.npz"),
                 "--duration", "10", "--url", server.http_url]) == 1
    assert "missing.npz" in capsys.readouterr().err


def test_without_cpu_streams_under_load(served_model, make_query, reference, same_answer, tmp_path):
    """``cpu_streams`` 1: each batch computed and answered inside execute (the other tests here run the default,
    CPU streams, wherever there are 2+ cores; test_cpu_streams.py tests the streams themselves). Concurrent
    queries of mixed lengths, with a bad one among them, are all answered right, the bad one by name."""
    cpu_streams = 1
    from serving.build_repository import build_repository

    repo = tmp_path / "model_repository"
    build_repository(served_model.onnx_path, repo, cpu_streams=cpu_streams)
    rng = np.random.default_rng(cpu_streams)
    queries = [make_query(int(rng.integers(1, 31)), int(rng.integers(1, 13)), 300 + i) for i in range(16)]
    bad = make_query(20, 6, 999)
    bad.video[3, 5] = np.nan

    async def ask_all(url: str):
        client = await AsyncCorebaClient.connect(url, "grpc")
        try:
            return await asyncio.gather(*(client.query(q.video, q.text, q.duration) for q in [*queries, bad]),
                                        return_exceptions=True)
        finally:
            await client.close()

    with TritonServer(repo, startup_timeout_s=180) as server:
        answers = asyncio.run(asyncio.wait_for(ask_all(server.grpc_url), timeout=120))
        with CorebaClient(server.grpc_url, "grpc") as client:  # and the server still answers after
            same_answer(client.query(queries[0].video, queries[0].text, queries[0].duration), reference(queries[0]))
    for query, got in zip(queries, answers):
        same_answer(got, reference(query))
    assert isinstance(answers[-1], Exception) and "NaN" in str(answers[-1])
