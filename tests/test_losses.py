"""The two training losses on hand-computed cases: masks entry by entry, ROAR's properties.

Expected values are computed here with numpy from the formulas in docs/DESIGN.md, never by calling
the loss a second time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shopsearch.training.losses.false_negative_masked_contrastive import (  # noqa: E402
    FalseNegativeMaskedContrastiveLoss,
)
from shopsearch.training.losses.functional import masked_info_nce  # noqa: E402
from shopsearch.training.losses.roar import ROARLoss, roar_loss_from_scores  # noqa: E402


def _softplus_neg(x: float) -> float:
    """-log sigmoid(x)."""
    return math.log1p(math.exp(-x))


def _log_odds(p: np.ndarray) -> float:
    big_p = float(p.mean())
    return math.log(big_p) - math.log(1.0 - big_p)


# -- stage 1 ---------------------------------------------------------------------------
def test_masked_info_nce_matches_hand_computation() -> None:
    scores = torch.tensor([[0.8, 0.75, 0.1, 0.3], [0.2, 0.6, 0.55, 0.7]])
    positive = torch.tensor([0, 1])
    identity = torch.tensor([[False, False, False, True], [False, False, False, False]])
    tau, m = 0.1, 0.1
    loss, id_mask, margin_mask = masked_info_nce(scores, positive, identity, tau, m)
    # Row 0: identity drops col 3; margin: 0.75 > 0.8 - 0.1 drops col 1 -> only col 2 left.
    # Row 1: margin: 0.7 > 0.5 drops col 3; 0.55 > 0.5 drops col 2 -> only col 0 left.
    assert id_mask.tolist() == [[False, False, False, True], [False, False, False, False]]
    assert margin_mask.tolist() == [[False, True, False, False], [False, False, True, True]]
    row0 = -math.log(math.exp(8.0) / (math.exp(8.0) + math.exp(1.0)))
    row1 = -math.log(math.exp(6.0) / (math.exp(6.0) + math.exp(2.0)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_margin_mask_has_no_gradient_and_uses_guide() -> None:
    scores = torch.tensor([[0.5, 0.45, 0.0]], requires_grad=True)
    guide = torch.tensor([[0.5, 0.0, 0.49]])  # the guide disagrees: it flags col 2, not col 1
    loss, _, margin_mask = masked_info_nce(scores, torch.tensor([0]), None, 0.1, 0.05, guide)
    assert margin_mask.tolist() == [[False, False, True]]
    loss.backward()
    assert scores.grad is not None
    assert scores.grad[0, 2].item() == 0.0  # masked column: no gradient
    assert scores.grad[0, 1].item() > 0.0  # live negative is pushed down
    assert scores.grad[0, 0].item() < 0.0  # positive pulled up
    expected = -math.log(math.exp(5.0) / (math.exp(5.0) + math.exp(4.5)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_identity_mask_entry_by_entry() -> None:
    # Rows: (query key, positive key, negative key).
    labels = torch.tensor([[0, 10, 12], [0, 11, 13], [1, 10, 14], [2, 15, 11]])
    # (query 2, product 14) is a known positive judged elsewhere in the data.
    loss_fn = FalseNegativeMaskedContrastiveLoss(model=None, known_positives=[(2, 14), (0, 10)])
    mask = loss_fn.identity_mask(labels, batch=4)
    # Columns: positives [10, 11, 10, 15], then negatives [12, 13, 14, 11].
    expected = [
        # q0: own 10; 11 is q0's other positive (same query); col 2 is product 10 again.
        [True, True, True, False, False, False, False, True],
        # q0 again: same as above from the other pair's side.
        [True, True, True, False, False, False, False, True],
        # q1: col 0 and col 2 are product 10 (its own positive); nothing else.
        [True, False, True, False, False, False, False, False],
        # q2: its own 15; product 14 (col 6) is a known positive; product 11 is not.
        [False, False, False, True, False, False, True, False],
    ]
    assert mask.tolist() == expected


def test_full_loss_excludes_exactly_the_masked_columns() -> None:
    emb_q = torch.eye(3)[:2]  # two queries on axes 0 and 1
    pos = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    neg = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([[0, 1, 3], [1, 2, 1]])  # q1's negative is q0's positive product 1
    loss_fn = FalseNegativeMaskedContrastiveLoss(model=None, temperature=0.5, margin=None)
    loss = loss_fn.compute_loss_from_embeddings([emb_q, pos, neg], labels)
    # s for q0: cols [pos0, pos1, neg0, neg1] = [1, 0.6, 0, 0]; col 3 is product 1 again,
    # q0's own positive: identity-masked.
    # s for q1: [0, 0.8, 0, 1]; col 3 is product 1, not q1's: kept (it is q0's positive only).
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2) + 1))
    row1 = -math.log(math.exp(1.6) / (1 + math.exp(1.6) + 1 + math.exp(2)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    stats = loss_fn.pop_mask_stats()
    assert stats["masked_identity"] == pytest.approx(1 / 6)  # 1 of the 6 negatives
    assert stats["masked_margin"] == 0.0
    assert loss_fn.pop_mask_stats() == {}  # reset after reading


def test_symmetric_term_and_mask_stats() -> None:
    emb_q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[0, 5], [0, 6]])  # same query twice: each pair masks the other
    loss_fn = FalseNegativeMaskedContrastiveLoss(
        model=None, temperature=1.0, margin=None, symmetric=True
    )
    loss = loss_fn.compute_loss_from_embeddings([emb_q, pos], labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # nothing left to contrast with
    assert loss_fn.pop_mask_stats()["masked_identity"] == pytest.approx(1.0)


# -- stage 2: ROAR ------------------------------------------------------------------------
def _roar_numpy(scores: list[float], grades: list[int], tau: float, beta: float, gammas) -> float:
    z = np.asarray(scores) / tau
    p = np.exp(z - z.max())
    p /= p.sum()
    g = np.asarray(grades)
    levels = sorted(set(g.tolist()), reverse=True)
    terms = []
    for a, b in itertools.pairwise(levels):
        gamma = sum(gammas[b:a])
        diff = _log_odds(p[g == a]) - _log_odds(p[g == b])
        terms.append(_softplus_neg(beta * diff - gamma))
    return float(np.mean(terms)) if terms else 0.0


def test_roar_matches_hand_computation_with_skipped_level() -> None:
    scores = [0.9, 0.5, 0.4, 0.1]
    grades = [3, 2, 2, 0]  # level 1 empty: pairs (3, 2) and (2, 0)
    gammas = [0.1, 0.2, 0.3]
    # By hand: gamma(3,2) = 0.3, gamma(2,0) = 0.1 + 0.2.
    expected = _roar_numpy(scores, grades, 0.5, 2.0, gammas)
    got = roar_loss_from_scores(
        torch.tensor([scores]), torch.tensor([grades]), temperature=0.5, beta=2.0, margins=gammas
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # And one fully explicit number, so the reference itself is pinned: tau=1, beta=1, gamma=0.
    z = np.array([1.0, 0.0])
    p = np.exp(z) / np.exp(z).sum()
    by_hand = math.log1p(math.exp(-(math.log(p[0] / p[1]) - math.log(p[1] / p[0]))))
    got2 = roar_loss_from_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[1, 0]]), 1.0)
    assert got2.item() == pytest.approx(by_hand, rel=1e-6)  # = softplus(-2) = 0.1269
    assert by_hand == pytest.approx(0.126928, rel=1e-5)


def test_roar_batch_mean_over_queries_with_pairs() -> None:
    scores = torch.tensor([[0.3, 0.2, 0.0], [0.9, 0.8, 0.7], [0.1, 0.5, 0.0]])
    grades = torch.tensor([[1, 0, -1], [2, 2, 2], [2, 1, 0]])  # query 2 has a single level
    got = roar_loss_from_scores(scores, grades, 0.2, 1.0, 0.0)
    q0 = _roar_numpy([0.3, 0.2], [1, 0], 0.2, 1.0, [0, 0])
    q2 = _roar_numpy([0.1, 0.5, 0.0], [2, 1, 0], 0.2, 1.0, [0, 0])
    assert got.item() == pytest.approx((q0 + q2) / 2, rel=1e-5)


def test_roar_padding_invariance() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.4, 0.1]])
    grades = torch.tensor([[2, 0, 1, 1]])
    padded_scores = torch.tensor([[0.7, 0.2, 0.99, 0.4, 0.1, -0.5, 0.99]])
    padded_grades = torch.tensor([[2, 0, -1, 1, 1, -1, -1]])
    a = roar_loss_from_scores(scores, grades, 0.05, 1.5, [0.2, 0.4])
    b = roar_loss_from_scores(padded_scores, padded_grades, 0.05, 1.5, [0.2, 0.4])
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_roar_permutation_invariance_within_group() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.4, 0.1, 0.3]])
    grades = torch.tensor([[2, 0, 1, 1, 0]])
    perm = torch.tensor([3, 4, 0, 2, 1])  # shuffles members of every group
    a = roar_loss_from_scores(scores, grades, 0.1, 1.0, 0.1)
    b = roar_loss_from_scores(scores[:, perm], grades[:, perm], 0.1, 1.0, 0.1)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_roar_single_level_is_zero_without_nan() -> None:
    scores = torch.tensor([[0.5, 0.4, 0.0], [0.9, 0.0, 0.0]], requires_grad=True)
    grades = torch.tensor([[1, 1, -1], [3, -1, -1]])  # a one-candidate query too
    loss = roar_loss_from_scores(scores, grades, 0.01, 1.0, 0.5)
    assert loss.item() == 0.0
    loss.backward()  # a valid graph even when nothing contributes
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad == 0).all()


def _sgd_step(scores: torch.Tensor, grades: torch.Tensor, lr: float) -> tuple:
    scores = scores.clone().requires_grad_(True)
    loss = roar_loss_from_scores(scores, grades, 0.1, 1.0, 0.0)
    loss.backward()
    with torch.no_grad():
        stepped = scores - lr * scores.grad
    after = roar_loss_from_scores(stepped, grades, 0.1, 1.0, 0.0)
    return scores.detach()[0], stepped[0], loss.item(), after.item()


def test_roar_gradient_direction_two_levels() -> None:
    # Two groups of two, wrongly ordered: every relevant score must rise against every other.
    grades = torch.tensor([[1, 0, 1, 0]])
    before, after, loss, loss_after = _sgd_step(torch.tensor([[0.2, 0.5, 0.3, 0.4]]), grades, 0.01)
    for hi in (0, 2):
        for lo in (1, 3):
            assert after[hi] - after[lo] > before[hi] - before[lo]
    assert loss_after < loss


def test_roar_gradient_direction_every_consecutive_pair() -> None:
    # Tied scores over three levels: each consecutive pair (2 > 1, 1 > 0) must open up.
    grades = torch.tensor([[2, 1, 1, 0, 0]])
    before, after, loss, loss_after = _sgd_step(torch.full((1, 5), 0.3), grades, 0.01)
    assert after[0] - after[1] > before[0] - before[1]
    assert after[0] - after[2] > before[0] - before[2]
    assert after[1] - after[3] > before[1] - before[3]
    assert after[2] - after[4] > before[2] - before[4]
    assert loss_after < loss


def test_roar_gradient_fixes_the_violated_pair() -> None:
    # Level 2 below level 1 (violated); level 1 far above level 0 (satisfied).
    grades = torch.tensor([[2, 1, 1, 0]])
    before, after, loss, loss_after = _sgd_step(
        torch.tensor([[0.3, 0.35, 0.32, 0.1]]), grades, 0.01
    )
    assert after[0] - after[1] > before[0] - before[1]
    assert after[0] - after[2] > before[0] - before[2]
    assert loss_after < loss


def test_roar_stable_at_small_temperature() -> None:
    # tau = 0.01 turns cosines into logits of +-100; the top group holds ~all the mass.
    scores = torch.tensor(
        [[1.0, -1.0, 0.999, -0.98, 0.2], [0.99, 1.0, -1.0, 0.0, 0.0]], requires_grad=True
    )
    grades = torch.tensor([[3, 0, 2, 1, -1], [0, 1, 2, -1, -1]])
    loss = roar_loss_from_scores(scores, grades, 0.01, 1.0, [0.1, 0.1, 0.1])
    loss.backward()
    assert torch.isfinite(loss)
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    # Row 1 is ordered backwards: its loss must be large, not clipped to nonsense.
    row1 = roar_loss_from_scores(scores[1:].detach(), grades[1:], 0.01, 1.0, [0.1, 0.1, 0.1])
    assert row1.item() > 10
    # Float64 reference with numpy where it is representable.
    ref = _roar_numpy([0.99, 1.0, -1.0], [0, 1, 2], 0.01, 1.0, [0.1, 0.1, 0.1])
    assert row1.item() == pytest.approx(ref, rel=1e-4)


def test_roar_loss_module_scatters_flattened_candidates() -> None:
    # Query 0: 3 candidates, query 1: 2; flattened row by row as the collator produces them.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    grades = torch.tensor([[2, 1, 0], [1, 0, -1]])
    loss_fn = ROARLoss(model=None, temperature=0.5, beta=1.0)
    got = loss_fn.compute_loss_from_embeddings([q, cands], grades)
    q0 = _roar_numpy([1.0, 0.6, 0.0], [2, 1, 0], 0.5, 1.0, [0, 0])
    q1 = _roar_numpy([1.0, 0.0], [1, 0], 0.5, 1.0, [0])
    assert got.item() == pytest.approx((q0 + q1) / 2, rel=1e-5)
    with_anchor = ROARLoss(model=None, temperature=0.5, anchor_weight=0.5, anchor_margin=None)
    anchored = with_anchor.compute_loss_from_embeddings([q, cands], grades)
    # Anchor: q0's positive = cand 0 vs q1's cands (3, 4); q1's = cand 3 vs q0's (0, 1, 2).
    tau = 0.05
    a0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0) + math.exp(1 / tau)))
    a1 = -math.log(
        math.exp(1 / tau)
        / (math.exp(1 / tau) + math.exp(0) + math.exp(0.8 / tau) + math.exp(1 / tau))
    )
    assert anchored.item() == pytest.approx(got.item() + 0.5 * (a0 + a1) / 2, rel=1e-5)


def test_config_and_citation() -> None:
    roar = ROARLoss(model=None, margins=[0.1, 0.2])
    assert roar.get_config_dict()["margins"] == [0.1, 0.2]
    assert "ROAR: Relative Odds Alignment for Retrieval" in roar.citation
    fn = FalseNegativeMaskedContrastiveLoss(model=None, margin=0.1, known_positives=[(0, 1)])
    assert fn.get_config_dict() == {
        "temperature": 0.05,
        "margin": 0.1,
        "symmetric": False,
        "guide": None,
        "known_positives": 1,
    }
    named = FalseNegativeMaskedContrastiveLoss(model=None, guide_name="runs/stage1/model")
    assert named.get_config_dict()["guide"] is None  # a name without a guide names nothing


def test_config_dicts_citations_and_docstrings_follow_sentence_transformers() -> None:
    import ast
    import textwrap

    roar = ROARLoss(
        model=None,
        temperature=0.1,
        beta=2.0,
        margins=0.3,
        anchor_weight=0.5,
        anchor_temperature=0.02,
        anchor_margin=None,
        anchor_min_grade=2,
    )
    assert roar.get_config_dict() == {
        "temperature": 0.1,
        "beta": 2.0,
        "margins": 0.3,
        "anchor_weight": 0.5,
        "anchor_temperature": 0.02,
        "anchor_margin": None,
        "anchor_min_grade": 2,
    }
    fn = FalseNegativeMaskedContrastiveLoss(model=None)
    assert "1807.03748" in fn.citation and "2402.16829" in fn.citation  # InfoNCE, GISTEmbed
    for loss in (FalseNegativeMaskedContrastiveLoss, ROARLoss):
        doc = loss.__doc__ or ""
        for section in ("Args:", "References:", "Requirements:", "Inputs:", "Relations:"):
            assert f"\n    {section}\n" in doc, (loss.__name__, section)
        example = doc.split("\n    Example:\n        ::\n", 1)[1]
        ast.parse(textwrap.dedent(example))  # the Example is valid Python
    assert "GISTEmbedLoss" in (FalseNegativeMaskedContrastiveLoss.__doc__ or "")
