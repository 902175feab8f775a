"""Stage 1: in-batch contrastive loss that refuses to push away likely false negatives.

Product search batches are full of false negatives: the same product twice, another product the
same query is known to like, or a near-duplicate (other size, colour, pack) of the positive.
Plain InfoNCE / MultipleNegativesRankingLoss pushes all of them away, which teaches the encoder
to separate things shoppers treat as interchangeable. This loss drops them from the denominator
with two masks (docs/DESIGN.md, "Stage 1"). It needs the `train` extra (torch,
sentence-transformers) and is never imported on the query path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# Pair keys pack (query key, product key) into one int64: query * STRIDE + product.
PAIR_KEY_STRIDE = 1 << 32


def pair_keys(query_keys: Tensor, product_keys: Tensor) -> Tensor:
    """int64 keys of (query, product) pairs, broadcasting the two tensors."""
    return query_keys.long() * PAIR_KEY_STRIDE + product_keys.long()


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


class FalseNegativeMaskedContrastiveLoss(nn.Module):
    r"""InfoNCE over in-batch (and mined hard) negatives with an identity and a margin mask.

    For a batch of B (query q_i, positive d_i) pairs, optionally with H hard negatives each,
    with normalised embeddings and s_ij = cos(q_i, d_j) over all B·(1+H) products d_j:

    .. math::

        L_i = -\log \frac{e^{s_{ii}/\tau}}{e^{s_{ii}/\tau} + \sum_{j \in N_i} e^{s_{ij}/\tau}}

    N_i is every other product column except

    * the **identity mask**: d_j is the same product as d_i, or a known positive of q_i (another
      pair of the same query in the batch, or any (q_i, d_j) in ``known_positives``);
    * the **margin mask**: s_ij > s_ii - m, computed without gradient, on a frozen ``guide``
      model's similarities when one is given (near-duplicates of the positive). A negative m
      masks only negatives scoring above the positive by more than -m: `shopsearch train`
      uses m = -0.1, since on Home Depot every m >= 0 tried hid informative negatives and
      lost nDCG (benchmarks/RESULTS.md §6); the default here, 0.05, keeps the mask's first
      meaning: negatives within m of the positive.

    With ``symmetric=True`` the product-to-query direction (each d_i against all queries, with
    the transposed masks) is added and the two are averaged.

    Inputs, as the sentence-transformers Trainer passes them: ``sentence_features`` =
    [anchor, positive, negative_1, ..., negative_H] and ``labels`` an int64 tensor [B, 2 + H]
    of (query key, positive product key, negative product keys...) — the keys that
    `shopsearch.training.data` assigns. Without labels only the margin mask applies.

    The fraction of negatives each mask removed is accumulated; `pop_mask_stats()` returns the
    mean since the last call (the training pipeline adds it to the Trainer's logs).
    """

    def __init__(
        self,
        model: Any,
        temperature: float = 0.05,
        margin: float | None = 0.05,
        guide: Any | None = None,
        symmetric: bool = False,
        known_positives: Iterable[tuple[int, int]] | None = None,
        guide_name: str | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)
        self.margin = None if margin is None else float(margin)
        self.guide = guide
        # A model loaded from a path does not know its own name; the config should.
        self.guide_name = None if guide is None else guide_name or type(guide).__name__
        self.symmetric = bool(symmetric)
        pairs = list(known_positives or [])
        keys = (
            pair_keys(torch.tensor([q for q, _ in pairs]), torch.tensor([p for _, p in pairs]))
            if pairs
            else torch.empty(0, dtype=torch.long)
        )
        self.register_buffer("known_pair_keys", torch.sort(keys.long()).values, persistent=False)
        self._must_retokenize = False
        if guide is not None:
            for param in guide.parameters():
                param.requires_grad_(False)
            guide.eval()
            self._must_retokenize = (
                model.tokenizer.get_vocab() != guide.tokenizer.get_vocab()
                or guide.max_seq_length < model.max_seq_length
            )
        self._stats = {"identity": 0.0, "margin": 0.0, "batches": 0}

    # -- sentence-transformers protocol -------------------------------------------
    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None
    ) -> Tensor:
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError("expected (anchor, positive[, negatives...]) columns")
        embeddings = [self.model(f)["sentence_embedding"] for f in features]
        guide_embeddings = self._guide_embeddings(features) if self.guide is not None else None
        return self.loss_from_embeddings(embeddings, labels, guide_embeddings)

    def loss_from_embeddings(
        self,
        embeddings: list[Tensor],
        labels: Tensor | None,
        guide_embeddings: list[Tensor] | None = None,
    ) -> Tensor:
        """The loss for embeddings [anchor, positive, negatives...], each [B, D]."""
        queries = F.normalize(embeddings[0], dim=-1)
        docs = F.normalize(torch.cat(embeddings[1:]), dim=-1)
        batch = queries.size(0)
        scores = queries @ docs.T  # [B, B * (1 + H)]
        guide_scores = None
        if guide_embeddings is not None:
            guide_q = F.normalize(guide_embeddings[0], dim=-1)
            guide_d = F.normalize(torch.cat(guide_embeddings[1:]), dim=-1)
            guide_scores = guide_q @ guide_d.T
        positive_index = torch.arange(batch, device=scores.device)
        identity = self.identity_mask(labels, batch) if labels is not None else None
        loss, identity_used, margin_used = masked_info_nce(
            scores, positive_index, identity, self.temperature, self.margin, guide_scores
        )
        fractions = [(identity_used, margin_used)]
        if self.symmetric:
            # Products against queries: only the B positives have a query of their own.
            t_scores = scores[:, :batch].T
            t_guide = guide_scores[:, :batch].T if guide_scores is not None else None
            t_identity = identity[:, :batch].T if identity is not None else None
            loss_t, identity_t, margin_t = masked_info_nce(
                t_scores, positive_index, t_identity, self.temperature, self.margin, t_guide
            )
            loss = (loss + loss_t) / 2
            fractions.append((identity_t, margin_t))
        self._record(fractions)
        return loss

    def identity_mask(self, labels: Tensor, batch: int) -> Tensor:
        """[B, B·(1+H)] True where column j is the row's own product or a known positive of q_i.

        Column order is all B positives, then all B first negatives, and so on (the order the
        columns are concatenated in). The diagonal (each row's positive) is True too;
        `masked_info_nce` never drops the positive column itself.
        """
        labels = labels.to(torch.long)
        if labels.dim() != 2 or labels.size(0) != batch or labels.size(1) < 2:
            raise ValueError(
                f"labels must be [batch, 2 + negatives] (query key, product keys...), "
                f"got shape {tuple(labels.shape)}"
            )
        query_keys = labels[:, 0]
        doc_keys = labels[:, 1:].T.reshape(-1)  # column-major: positives first
        positive_keys = labels[:, 1]
        # d_j is a known positive of q_i when some pair k of the same query has d_j as its
        # positive (k = i: the row's own product, wherever else it appears in the batch).
        same_query = (query_keys.unsqueeze(1) == query_keys.unsqueeze(0)).float()  # [B, B]
        is_positive_of = (positive_keys.unsqueeze(1) == doc_keys.unsqueeze(0)).float()  # [B, M]
        mask = (same_query @ is_positive_of) > 0
        if self.known_pair_keys.numel():
            keys = pair_keys(query_keys.unsqueeze(1), doc_keys.unsqueeze(0))
            known = self.known_pair_keys.to(keys.device)
            mask = mask | torch.isin(keys, known)
        return mask

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "margin": self.margin,
            "symmetric": self.symmetric,
            "guide": self.guide_name,
            "known_positives": int(self.known_pair_keys.numel()),
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{oord2018infonce,
    title={Representation Learning with Contrastive Predictive Coding},
    author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
    year={2018},
    eprint={1807.03748},
    archivePrefix={arXiv}
}
@misc{solatorio2024gistembed,
    title={GISTEmbed: Guided In-sample Selection of Training Negatives
           for Text Embedding Fine-tuning},
    author={Aivin V. Solatorio},
    year={2024},
    eprint={2402.16829},
    archivePrefix={arXiv}
}
"""

    # -- masked-fraction logging ----------------------------------------------------
    def pop_mask_stats(self) -> dict[str, float]:
        """Mean fraction of negatives removed by each mask since the last call (then reset)."""
        n = self._stats["batches"]
        if not n:
            return {}
        out = {
            "masked_identity": self._stats["identity"] / n,
            "masked_margin": self._stats["margin"] / n,
        }
        out["masked_fraction"] = out["masked_identity"] + out["masked_margin"]
        self._stats = {"identity": 0.0, "margin": 0.0, "batches": 0}
        return out

    def _record(self, masks: list[tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            identity = margin = 0.0
            for id_mask, m_mask in masks:
                negatives = max(id_mask.numel() - id_mask.size(0), 1)
                identity += id_mask.sum().item() / negatives
                margin += m_mask.sum().item() / negatives
        identity, margin = identity / len(masks), margin / len(masks)
        self._stats["identity"] += identity
        self._stats["margin"] += margin
        self._stats["batches"] += 1
        logger.debug("masked negatives: identity %.4f, margin %.4f", identity, margin)

    def _guide_embeddings(self, features: list[dict[str, Tensor]]) -> list[Tensor]:
        with torch.no_grad():
            if self._must_retokenize:
                texts = [
                    self.model.tokenizer.batch_decode(f["input_ids"], skip_special_tokens=True)
                    for f in features
                ]
                features = [
                    {
                        k: v.to(self.guide.device) if isinstance(v, Tensor) else v
                        for k, v in self.guide.preprocess(t).items()
                    }
                    for t in texts
                ]
            # Shallow copies: models write their outputs into the dict they are given.
            return [self.guide(dict(f))["sentence_embedding"] for f in features]
