"""Fixtures of the serving tests: one tiny model exported once per session (its end-to-end graph, and its raw
graph for the baseline), its repository, and the reference answer (eager PyTorch + the ONE post-processing)
that every served answer is compared with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from coreba import Coreba, CorebaConfig
from coreba.postprocess import QueryResult, postprocess
from export.validate import eager_outputs

TOLERANCE = 1e-4  # served vs eager, on every moment value and saliency


@dataclass
class ServedModel:
    model: Coreba
    config: CorebaConfig
    onnx_path: Path  # the end-to-end graph: what is served
    raw_onnx_path: Path  # the raw graph: the baseline's engine


@dataclass
class Query:
    video: np.ndarray  # (L_v, D_v) float32, unpadded
    text: np.ndarray  # (L_t, D_t) float32, unpadded
    duration: float


@pytest.fixture(scope="session")
def served_model(tiny_end_to_end, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """The tiny config (30 clips, 12 tokens), its end-to-end graph (shared with the export tests) and its raw
    graph, each checked by export_onnx against eager PyTorch."""
    import export.onnx_export as onnx_export

    model, result = tiny_end_to_end
    raw = onnx_export.export_onnx(model, tmp_path_factory.mktemp("onnx") / "coreba.onnx").path
    return ServedModel(model, model.config, result.path, raw)


@pytest.fixture(scope="session")
def repository(served_model: ServedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default repository (coreba, coreba_onnx) plus the baseline (the two-step path of before), with a queue
    delay: the tiny model answers in ~1 ms, faster than a test client sends, so without one concurrent requests
    would rarely meet in the queue and the batching test would test the client's speed."""
    from serving.build_repository import build_repository
    from serving.model_configs import Batching

    output = tmp_path_factory.mktemp("repo") / "model_repository"
    build_repository(served_model.onnx_path, output, batching=Batching(max_queue_delay_us=5000),
                     baseline_onnx=served_model.raw_onnx_path)
    return output


@pytest.fixture(scope="session")
def make_query(served_model: ServedModel) -> Callable[[int, int, int], Query]:
    """``make_query(num_clips, num_tokens, seed)``: random features and a duration close to 2 s per clip."""
    cfg = served_model.config

    def make(num_clips: int, num_tokens: int, seed: int) -> Query:
        rng = np.random.default_rng(seed)
        return Query(rng.standard_normal((num_clips, cfg.video_dim), dtype=np.float32),
                     rng.standard_normal((num_tokens, cfg.text_dim), dtype=np.float32),
                     float(np.float32(num_clips * cfg.clip_length - rng.uniform(0, 1))))

    return make


@pytest.fixture(scope="session")
def reference(served_model: ServedModel) -> Callable[[Query], QueryResult]:
    """Eager PyTorch on the UNPADDED query, then :func:`coreba.postprocess.postprocess`."""

    def answer(query: Query) -> QueryResult:
        feeds = {"video_feats": query.video[None], "video_mask": np.ones((1, len(query.video)), dtype=bool),
                 "text_feats": query.text[None], "text_mask": np.ones((1, len(query.text)), dtype=bool)}
        out = eager_outputs(served_model.model, feeds)
        return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                           durations=[query.duration])[0]

    return answer


def assert_same_answer(got: QueryResult, want: QueryResult, tol: float = TOLERANCE) -> None:
    """The same moments and saliency within ``tol``. Moments are compared as a set matched one to one, plus the
    sorted scores in order: windows whose scores tie to ~1e-7 (a 1-clip video) may legitimately swap places
    between engines, since fp32 rounding decides their order."""
    assert len(got.saliency) == len(want.saliency), (len(got.saliency), len(want.saliency))
    np.testing.assert_allclose(np.asarray(got.saliency), np.asarray(want.saliency), atol=tol, rtol=0)
    got_m, want_m = np.asarray(got.moments), np.asarray(want.moments)
    assert got_m.shape == want_m.shape, (got_m.shape, want_m.shape)
    np.testing.assert_allclose(got_m[:, 2], want_m[:, 2], atol=tol, rtol=0)
    unused = list(range(len(want_m)))
    for row in got_m:
        match = next((j for j in unused if np.abs(want_m[j] - row).max() <= tol), None)
        assert match is not None, f"served moment {row.tolist()} is not among the reference's {want_m.tolist()}"
        unused.remove(match)


@pytest.fixture(scope="session")
def same_answer() -> Callable[[QueryResult, QueryResult], None]:
    return assert_same_answer
