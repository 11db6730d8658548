"""Span conversions and (generalised) temporal IoU."""

import pytest
import torch

from coreba.ops import generalized_temporal_iou, span_cxw_to_xx, span_xx_to_cxw, temporal_iou


def _random_xx(n: int, generator: torch.Generator) -> torch.Tensor:
    a, b = torch.rand(n, 2, generator=generator, dtype=torch.float64).unbind(-1)
    return torch.stack([torch.minimum(a, b), torch.maximum(a, b)], dim=-1)


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    cxw = torch.rand(4, 5, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(span_xx_to_cxw(span_cxw_to_xx(cxw)), cxw)
    xx = _random_xx(7, g)
    torch.testing.assert_close(span_cxw_to_xx(span_xx_to_cxw(xx)), xx)


def test_conversion_values():
    torch.testing.assert_close(span_cxw_to_xx(torch.tensor([0.5, 0.2])), torch.tensor([0.4, 0.6]))
    torch.testing.assert_close(span_xx_to_cxw(torch.tensor([[1.0, 3.0]])), torch.tensor([[2.0, 2.0]]))


def test_iou_hand_checked():
    s1 = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    s2 = torch.tensor([[1.0, 3.0], [0.0, 2.0], [4.0, 5.0]])
    iou, union = temporal_iou(s1, s2)
    assert iou.shape == union.shape == (2, 3)
    # [0,2] vs [1,3]: inter 1, union 3; vs itself: 1; vs [4,5]: disjoint
    torch.testing.assert_close(iou[0], torch.tensor([1 / 3, 1.0, 0.0]))
    torch.testing.assert_close(union[0], torch.tensor([3.0, 2.0, 3.0]))
    # [0,1] vs [1,3]: touching, 0; vs [0,2]: 1/2
    torch.testing.assert_close(iou[1], torch.tensor([0.0, 0.5, 0.0]))


def test_giou_hand_checked():
    s1 = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    s2 = torch.tensor([[1.0, 3.0], [0.0, 2.0], [4.0, 5.0]])
    giou = generalized_temporal_iou(s1, s2)
    # [0,2] vs [1,3]: enclosing 3 = union -> 1/3; [0,2] vs [4,5]: 0 - (5 - 3) / 5
    torch.testing.assert_close(giou[0], torch.tensor([1 / 3, 1.0, -0.4]))
    # [0,1] vs [4,5]: 0 - (5 - 2) / 5
    torch.testing.assert_close(giou[1], torch.tensor([0.0, 0.5, -0.6]))


@pytest.mark.parametrize("fn", [lambda a, b: temporal_iou(a, b)[0], generalized_temporal_iou])
def test_symmetric_and_bounded(fn):
    g = torch.Generator().manual_seed(1)
    a, b = _random_xx(6, g), _random_xx(4, g)
    m = fn(a, b)
    assert m.shape == (6, 4)
    torch.testing.assert_close(m, fn(b, a).T)
    assert (m <= 1 + 1e-9).all() and (m >= -1 - 1e-9).all()
    torch.testing.assert_close(torch.diag(fn(a, a)), torch.ones(6, dtype=a.dtype))
    assert (generalized_temporal_iou(a, b) <= temporal_iou(a, b)[0] + 1e-9).all()


def test_zero_width_spans_are_finite():
    s = torch.tensor([[0.5, 0.5], [0.2, 0.2]], requires_grad=True)
    giou = generalized_temporal_iou(s, s)
    giou.sum().backward()
    assert torch.isfinite(giou).all() and torch.isfinite(s.grad).all()


def test_empty_inputs():
    empty = torch.zeros(0, 2)
    assert generalized_temporal_iou(empty, torch.rand(3, 2)).shape == (0, 3)
    assert temporal_iou(torch.rand(3, 2), empty)[0].shape == (3, 0)
