"""Hungarian matcher: optimal against brute force, empty targets, config wiring."""

import itertools

import pytest
import torch

from coreba.config import LossConfig
from coreba.losses import HungarianMatcher, build_matcher


def _reference_cost(logits, spans, tgt, c_span=10.0, c_giou=1.0, c_class=4.0):
    """(Q, n) cost from the definition, one pair at a time (independent of the vectorised code)."""
    p_fg = logits.softmax(-1)[:, 0]
    cost = torch.zeros(len(spans), len(tgt), dtype=torch.float64)
    for q, (pc, pw) in enumerate(spans.tolist()):
        ps, pe = pc - pw / 2, pc + pw / 2
        for t, (tc, tw) in enumerate(tgt.tolist()):
            ts, te = tc - tw / 2, tc + tw / 2
            inter = max(0.0, min(pe, te) - max(ps, ts))
            union = (pe - ps) + (te - ts) - inter
            enclosing = max(pe, te) - min(ps, ts)
            giou = inter / union - (enclosing - union) / enclosing
            l1 = abs(pc - tc) + abs(pw - tw)
            cost[q, t] = c_span * l1 - c_giou * giou - c_class * p_fg[q].item()
    return cost


def _brute_force_min(cost: torch.Tensor) -> float:
    q, n = cost.shape
    if n <= q:
        return min(sum(cost[p[t], t].item() for t in range(n)) for p in itertools.permutations(range(q), n))
    return min(sum(cost[i, p[i]].item() for i in range(q)) for p in itertools.permutations(range(n), q))


def _random_case(batch, num_queries, sizes, seed):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(batch, num_queries, 2, generator=g),
        "pred_spans": torch.rand(batch, num_queries, 2, generator=g) * 0.8 + 0.1,
    }
    targets = {"span_labels": [{"spans": torch.rand(n, 2, generator=g) * 0.8 + 0.1} for n in sizes]}
    return outputs, targets


@pytest.mark.parametrize("seed", range(4))
def test_assignment_is_optimal(seed):
    sizes = [0, 1, 3, 5, 6]  # 6 > Q: only Q of them can be matched
    outputs, targets = _random_case(len(sizes), 5, sizes, seed)
    indices = HungarianMatcher()(outputs, targets)
    assert len(indices) == len(sizes)
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        n = sizes[b]
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert len(pred_idx) == len(tgt_idx) == min(5, n)
        assert len(set(pred_idx.tolist())) == len(pred_idx) and len(set(tgt_idx.tolist())) == len(tgt_idx)
        cost = _reference_cost(outputs["pred_logits"][b].double(), outputs["pred_spans"][b].double(),
                               targets["span_labels"][b]["spans"].double())
        got = cost[pred_idx, tgt_idx].sum().item()
        assert got == pytest.approx(_brute_force_min(cost), abs=1e-4)


def test_cost_matrix_matches_definition():
    outputs, targets = _random_case(2, 4, [3, 2], seed=7)
    costs = HungarianMatcher().cost_matrices(outputs, targets)
    for b, cost in enumerate(costs):
        ref = _reference_cost(outputs["pred_logits"][b].double(), outputs["pred_spans"][b].double(),
                              targets["span_labels"][b]["spans"].double())
        torch.testing.assert_close(cost.double(), ref, atol=1e-5, rtol=1e-5)


def test_no_targets():
    outputs, targets = _random_case(3, 4, [0, 0, 0], seed=0)
    for pred_idx, tgt_idx in HungarianMatcher()(outputs, targets):
        assert pred_idx.numel() == tgt_idx.numel() == 0
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64


def test_obvious_match_and_no_grad():
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.3], [0.5, 0.5]]], requires_grad=True)
    outputs = {"pred_logits": torch.zeros(1, 3, 2, requires_grad=True), "pred_spans": spans}
    targets = {"span_labels": [{"spans": torch.tensor([[0.7, 0.3], [0.2, 0.1]])}]}
    (pred_idx, tgt_idx), = HungarianMatcher()(outputs, targets)
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist(), strict=True)) == {0: 1, 1: 0}


def test_build_matcher_uses_config():
    m = build_matcher(LossConfig(cost_span=2.0, cost_giou=3.0, cost_class=5.0))
    assert (m.cost_span, m.cost_giou, m.cost_class) == (2.0, 3.0, 5.0)
    d = build_matcher(LossConfig())
    assert (d.cost_span, d.cost_giou, d.cost_class) == (10.0, 1.0, 4.0)
