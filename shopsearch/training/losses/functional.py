"""The masked InfoNCE that both losses compute, as a function of a score matrix.

`FalseNegativeMaskedContrastiveLoss` is this function over a batch's query-product scores;
`ROARLoss` adds it as its retrieval anchor. It lives here rather than in either loss's module
so that neither loss depends on the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_info_nce(
    scores: Tensor,
    positive_index: Tensor,
    identity_mask: Tensor | None,
    temperature: float,
    margin: float | None,
    guide_scores: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean over rows of -log softmax(scores/tau)[positive] over the unmasked columns.

    `scores` [B, M] are cosine similarities of each anchor with every candidate column;
    `positive_index` [B] names each row's positive column. `identity_mask` [B, M] (True = drop)
    marks certain false negatives. The margin mask drops columns j with s_ij > s_ii - m, judged on
    `guide_scores` when given, else on the detached `scores`: it never carries gradient. The
    positive column is never masked. Returns (loss, identity-only mask, margin mask).
    """
    rows = torch.arange(scores.size(0), device=scores.device)
    is_positive = torch.zeros_like(scores, dtype=torch.bool)
    is_positive[rows, positive_index] = True
    identity = (
        torch.zeros_like(is_positive)
        if identity_mask is None
        else identity_mask.to(torch.bool) & ~is_positive
    )
    if margin is None:
        margin_mask = torch.zeros_like(is_positive)
    else:
        with torch.no_grad():
            reference = (guide_scores if guide_scores is not None else scores).detach()
            positive_ref = reference[rows, positive_index].unsqueeze(1)
            margin_mask = (reference > positive_ref - margin) & ~is_positive & ~identity
    logits = (scores.float() / temperature).masked_fill(identity | margin_mask, float("-inf"))
    loss = F.cross_entropy(logits, positive_index)
    return loss, identity, margin_mask
