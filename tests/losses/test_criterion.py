"""SetCriterion: values, masking, gradients, and that optimising it reduces it."""

import math

import pytest
import torch
import torch.nn.functional as F

from coreba.config import LossConfig
from coreba.losses import SetCriterion, build_criterion

B, Q, LV, P = 3, 6, 10, 2
SIZES = [1, 3, 0]
VALID_LEN = [10, 7, 4]


def _batch(seed: int = 0, with_neg: bool = True, num_aux: int = 1):
    g = torch.Generator().manual_seed(seed)
    video_mask = torch.arange(LV)[None] < torch.tensor(VALID_LEN)[:, None]
    labels = torch.randint(0, 13, (B, LV), generator=g).float() * video_mask
    pos = torch.stack([torch.randint(0, n, (P,), generator=g) for n in VALID_LEN])
    neg = torch.stack([torch.randint(0, n, (P,), generator=g) for n in VALID_LEN])
    targets = {
        "span_labels": [{"spans": torch.rand(n, 2, generator=g) * 0.5 + 0.2} for n in SIZES],
        "saliency_pos_labels": pos,
        "saliency_neg_labels": neg,
        "saliency_all_labels": labels,
    }
    outputs = {
        "pred_logits": torch.randn(B, Q, 2, generator=g),
        "pred_spans": torch.rand(B, Q, 2, generator=g) * 0.8 + 0.1,
        "saliency_scores": torch.randn(B, LV, generator=g),
        "video_mask": video_mask,
        "aux_outputs": [{"pred_logits": torch.randn(B, Q, 2, generator=g),
                         "pred_spans": torch.rand(B, Q, 2, generator=g) * 0.8 + 0.1} for _ in range(num_aux)],
    }
    if with_neg:
        outputs["saliency_scores_neg"] = torch.randn(B, LV, generator=g)
    return outputs, targets


MAIN_KEYS = {"loss_span", "loss_giou", "loss_label", "loss_saliency_margin", "loss_saliency_contrastive",
             "loss_saliency_neg"}


def test_keys_finite_and_total():
    outputs, targets = _batch(num_aux=2)
    crit = build_criterion(LossConfig())
    losses = crit(outputs, targets)
    aux = {f"{k}_aux{i}" for i in range(2) for k in ("loss_span", "loss_giou", "loss_label")}
    assert set(losses) == MAIN_KEYS | aux | {"loss_total"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    cfg = LossConfig()
    weights = {"loss_span": cfg.span_weight, "loss_giou": cfg.giou_weight, "loss_label": cfg.label_weight,
               "loss_saliency_margin": cfg.margin_weight, "loss_saliency_contrastive": cfg.contrastive_weight,
               "loss_saliency_neg": cfg.negative_weight}
    expected = sum(weights[k.split("_aux")[0]] * v for k, v in losses.items() if k != "loss_total")
    torch.testing.assert_close(losses["loss_total"], expected)
    torch.testing.assert_close(crit.weighted_total(losses), losses["loss_total"])


def test_aux_loss_switch_and_missing_neg():
    outputs, targets = _batch(with_neg=False)
    losses = build_criterion(LossConfig(aux_loss=False))(outputs, targets)
    assert set(losses) == (MAIN_KEYS - {"loss_saliency_neg"}) | {"loss_total"}


def test_spans_perfect_prediction_and_hand_values():
    cfg = LossConfig()
    crit = build_criterion(cfg)
    tgt = torch.tensor([[0.3, 0.2], [0.7, 0.2]])
    spans = torch.tensor([[[0.7, 0.2], [0.5, 0.1], [0.3, 0.2]]])
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_spans": spans}
    targets = {"span_labels": [{"spans": tgt}]}
    indices = crit.matcher(outputs, targets)
    losses = crit.loss_spans(outputs, targets, indices, 2.0)
    assert losses["loss_span"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    # one target, shifted by 0.1: L1 = mean(0.1, 0) = 0.05; [0.2,0.4] vs [0.3,0.5]: gIoU = 1/3
    outputs["pred_spans"] = torch.tensor([[[0.4, 0.2]]])
    outputs["pred_logits"] = torch.zeros(1, 1, 2)
    targets = {"span_labels": [{"spans": tgt[:1]}]}
    losses = crit.loss_spans(outputs, targets, crit.matcher(outputs, targets), 1.0)
    assert losses["loss_span"].item() == pytest.approx(0.05, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2 / 3, abs=1e-6)


def test_no_targets_anywhere():
    outputs, targets = _batch()
    targets["span_labels"] = [{"spans": torch.zeros(0, 2)} for _ in range(B)]
    outputs["pred_spans"].requires_grad_(True)
    losses = build_criterion(LossConfig())(outputs, targets)
    assert losses["loss_span"].item() == 0 and losses["loss_giou"].item() == 0
    assert torch.isfinite(losses["loss_total"])
    losses["loss_total"].backward()  # still a valid graph


def test_background_weight():
    logits = torch.randn(2, Q, 2, generator=torch.Generator().manual_seed(3))
    outputs = {"pred_logits": logits, "pred_spans": torch.rand(2, Q, 2) * 0.5 + 0.2}
    no_targets = {"span_labels": [{"spans": torch.zeros(0, 2)}] * 2}
    plain = -logits.log_softmax(-1)[..., 1]  # every query is background
    for bg in (0.1, 1.0, 0.5):
        crit = SetCriterion(build_criterion(LossConfig()).matcher, LossConfig(background_weight=bg))
        got = crit.loss_labels(outputs, no_targets, crit.matcher(outputs, no_targets), 1.0)["loss_label"]
        torch.testing.assert_close(got, bg * plain.mean())
    # with targets: matched queries weigh 1, the others background_weight; mean over all B*Q queries
    targets = {"span_labels": [{"spans": torch.tensor([[0.5, 0.2]])}, {"spans": torch.zeros(0, 2)}]}
    crit = build_criterion(LossConfig())
    indices = crit.matcher(outputs, targets)
    q = indices[0][0].item()
    expected = 0.1 * plain
    expected[0, q] = -logits[0, q].log_softmax(-1)[0]
    got = crit.loss_labels(outputs, targets, indices, 1.0)["loss_label"]
    torch.testing.assert_close(got, expected.mean())


def test_margin_loss_hand_checked():
    crit = build_criterion(LossConfig())
    outputs = {"saliency_scores": torch.tensor([[1.0, 0.0, 0.5, 0.95]])}
    targets = {"saliency_pos_labels": torch.tensor([[0, 2]]), "saliency_neg_labels": torch.tensor([[3, 1]])}
    # pairs: max(0, 0.2 + 0.95 - 1) = 0.15, max(0, 0.2 + 0 - 0.5) = 0 -> mean 0.075, x2
    got = crit.loss_saliency_margin(outputs, targets, [], 1.0)["loss_saliency_margin"]
    assert got.item() == pytest.approx(0.15)


def _reference_contrastive(scores, neg, labels, mask, tau=0.5, max_rank=12):
    """Per sample and rank, straight from the definition."""
    total = 0.0
    for r in range(1, max_rank):
        if not ((labels >= r) & mask).any():
            continue
        per_sample = []
        for b in range(scores.shape[0]):
            s, lab = scores[b][mask[b]], labels[b][mask[b]]
            if neg is not None:
                s = torch.cat([s, neg[b][mask[b]]])
                lab = torch.cat([lab, torch.zeros_like(lab)])
            pos = lab >= r
            per_sample.append(-(s / tau).log_softmax(0)[pos].mean() if pos.any() else torch.tensor(0.0))
        total += torch.stack(per_sample).mean()
    return total / max_rank


@pytest.mark.parametrize("with_neg", [True, False])
def test_contrastive_matches_reference(with_neg):
    outputs, targets = _batch(seed=5, with_neg=with_neg)
    targets["saliency_all_labels"][2] = 0  # a sample without any positive
    crit = build_criterion(LossConfig())
    got = crit.loss_saliency_contrastive(outputs, targets, [], 1.0)["loss_saliency_contrastive"]
    ref = _reference_contrastive(outputs["saliency_scores"], outputs.get("saliency_scores_neg"),
                                 targets["saliency_all_labels"], outputs["video_mask"])
    torch.testing.assert_close(got, ref)


def test_negative_pair_loss_value_and_stability():
    crit = build_criterion(LossConfig())
    neg = torch.tensor([[0.0, 2.0, 100.0], [-1.0, 5.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    got = crit.loss_saliency_neg({"saliency_scores_neg": neg, "video_mask": mask}, {}, [], 1.0)
    sig = torch.sigmoid
    expected = (-math.log(1 - sig(torch.tensor(0.0))) - math.log(1 - sig(torch.tensor(2.0))) + 100.0
                - math.log(1 - sig(torch.tensor(-1.0)))) / 2
    assert got["loss_saliency_neg"].item() == pytest.approx(expected, rel=1e-5)


def test_masked_clips_do_not_matter():
    outputs, targets = _batch(seed=2)
    crit = build_criterion(LossConfig())
    names = ("saliency_margin", "saliency_contrastive", "saliency_neg")
    padded = ~outputs["video_mask"]

    def saliency_losses(out, tgt):
        res = {}
        for n in names:
            res.update(crit.get_loss(n, out, tgt, [], 1.0))
        return res

    out1 = {k: v for k, v in outputs.items()}
    out1["saliency_scores"] = outputs["saliency_scores"].clone().requires_grad_(True)
    out1["saliency_scores_neg"] = outputs["saliency_scores_neg"].clone().requires_grad_(True)
    base = saliency_losses(out1, targets)
    sum(base.values()).backward()
    assert (out1["saliency_scores"].grad[padded] == 0).all()
    assert (out1["saliency_scores_neg"].grad[padded] == 0).all()

    out2 = dict(outputs)
    out2["saliency_scores"] = torch.where(padded, 1e3, outputs["saliency_scores"])
    out2["saliency_scores_neg"] = torch.where(padded, -1e3, outputs["saliency_scores_neg"])
    tgt2 = dict(targets)
    tgt2["saliency_all_labels"] = torch.where(padded, 12.0, targets["saliency_all_labels"])
    other = saliency_losses(out2, tgt2)
    for k in base:
        torch.testing.assert_close(other[k], base[k].detach())


def test_gradients_flow_everywhere():
    outputs, targets = _batch()
    leaves = []
    for d in [outputs, *outputs["aux_outputs"]]:
        for k in list(d):
            if torch.is_tensor(d[k]) and d[k].is_floating_point():
                d[k] = d[k].clone().requires_grad_(True)
                leaves.append(d[k])
    build_criterion(LossConfig())(outputs, targets)["loss_total"].backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_optimising_free_parameters_reduces_total():
    torch.manual_seed(0)
    outputs, targets = _batch(seed=11, num_aux=1)
    params = {
        "logits": torch.nn.Parameter(torch.randn(B, Q, 2)),
        "spans": torch.nn.Parameter(torch.randn(B, Q, 2)),
        "aux_logits": torch.nn.Parameter(torch.randn(B, Q, 2)),
        "aux_spans": torch.nn.Parameter(torch.randn(B, Q, 2)),
        "sal": torch.nn.Parameter(torch.randn(B, LV)),
        "sal_neg": torch.nn.Parameter(torch.randn(B, LV)),
    }
    crit = build_criterion(LossConfig())
    opt = torch.optim.Adam(params.values(), lr=0.05)

    def total():
        out = {
            "pred_logits": params["logits"], "pred_spans": params["spans"].sigmoid(),
            "saliency_scores": params["sal"], "saliency_scores_neg": params["sal_neg"],
            "video_mask": outputs["video_mask"],
            "aux_outputs": [{"pred_logits": params["aux_logits"],
                             "pred_spans": params["aux_spans"].sigmoid()}],
        }
        return crit(out, targets)

    first = total()
    for _ in range(50):
        opt.zero_grad()
        loss = total()["loss_total"]
        loss.backward()
        opt.step()
    last = total()
    assert last["loss_total"] < 0.5 * first["loss_total"]
    for k in set(first) - {"loss_total"}:
        assert last[k] < first[k], k


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown"):
        SetCriterion(build_criterion(LossConfig()).matcher, LossConfig(), losses=("spans", "nope"))


def test_cross_entropy_default_weights_match_functional():
    # sanity: class_weight buffer is [1, background_weight]
    crit = build_criterion(LossConfig(background_weight=0.25))
    torch.testing.assert_close(crit.class_weight, torch.tensor([1.0, 0.25]))
    logits = torch.randn(1, 2, 2)
    out = {"pred_logits": logits, "pred_spans": torch.rand(1, 2, 2)}
    tgt = {"span_labels": [{"spans": torch.zeros(0, 2)}]}
    got = crit.loss_labels(out, tgt, crit.matcher(out, tgt), 1.0)["loss_label"]
    ref = F.cross_entropy(logits[0], torch.ones(2, dtype=torch.long), reduction="none").mean() * 0.25
    torch.testing.assert_close(got, ref)
