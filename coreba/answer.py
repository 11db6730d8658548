"""The answer's fixed-shape layout: what the end-to-end graph returns and what travels over the wire.

Triton batches requests only when every tensor of a batch has one shape, so a variable-length answer is
packed into fixed shapes plus a count (B queries, K moments, Lv clip slots = the padded video length):

* ``moments``   (B, K, 3) float32: ``[start_s, end_s, score]`` sorted by score (descending); K = top k.
* ``saliency``  (B, Lv)   float32: the saliency of each valid clip, in clip order, packed to the front
  (a video mask with holes still yields its valid clips in order); the slots after ``num_clips`` are 0.
  With the usual prefix masks (valid clips first) this is the saliency with the padded clips zeroed.
* ``num_clips`` (B, 1)    int32: how many saliency slots are valid.

The end-to-end graph computes these arrays (``export.answer_graph``); :func:`pack_answer` builds them from
:func:`coreba.postprocess.postprocess`'s results (the reference the graph is checked against), and
:func:`unpack_answer` turns them back into one :class:`QueryResult` per query (the client).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from coreba.postprocess import QueryResult

MOMENT_FIELDS = 3  # start_s, end_s, score


def pack_answer(results: Sequence[QueryResult], top_k: int, num_slots: int) -> dict[str, np.ndarray]:
    """``results`` of one request (B queries) -> the three fixed-shape output arrays."""
    B = len(results)
    moments = np.zeros((B, top_k, MOMENT_FIELDS), dtype=np.float32)
    saliency = np.zeros((B, num_slots), dtype=np.float32)
    num_clips = np.zeros((B, 1), dtype=np.int32)
    for b, result in enumerate(results):
        assert len(result.moments) == top_k, f"expected {top_k} moments, post-processing gave {len(result.moments)}"
        assert len(result.saliency) <= num_slots, f"{len(result.saliency)} saliency values for {num_slots} slots"
        moments[b] = np.asarray(result.moments, dtype=np.float32).reshape(top_k, MOMENT_FIELDS)
        saliency[b, : len(result.saliency)] = result.saliency
        num_clips[b, 0] = len(result.saliency)
    return {"moments": moments, "saliency": saliency, "num_clips": num_clips}


def unpack_answer(outputs: Mapping[str, np.ndarray]) -> list[QueryResult]:
    """The three output arrays of a (B-query) response -> one :class:`QueryResult` per query."""
    moments = np.asarray(outputs["moments"], dtype=np.float64)
    saliency = np.asarray(outputs["saliency"], dtype=np.float64)
    counts = np.asarray(outputs["num_clips"]).reshape(-1)
    return [QueryResult(moments=moments[b].tolist(), saliency=saliency[b, : int(counts[b])].tolist())
            for b in range(moments.shape[0])]
