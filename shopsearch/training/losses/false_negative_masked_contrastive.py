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

from shopsearch.training.losses.functional import masked_info_nce

logger = logging.getLogger(__name__)

# Pair keys pack (query key, product key) into one int64: query * STRIDE + product.
PAIR_KEY_STRIDE = 1 << 32


def pair_keys(query_keys: Tensor, product_keys: Tensor) -> Tensor:
    """int64 keys of (query, product) pairs, broadcasting the two tensors."""
    return query_keys.long() * PAIR_KEY_STRIDE + product_keys.long()


class FalseNegativeMaskedContrastiveLoss(nn.Module):
    r"""InfoNCE over in-batch (and mined hard) negatives with an identity and a margin mask.

    For a batch of B (query q_i, positive d_i) pairs, optionally with H hard negatives each,
    with normalised embeddings and s_ij = cos(q_i, d_j) over all B·(1+H) products d_j:

    .. math::

        L_i = -\log \frac{e^{s_{ii}/\tau}}{e^{s_{ii}/\tau} + \sum_{j \in N_i} e^{s_{ij}/\tau}}

    N_i is every other product column except

    * the **identity mask**: d_j is the same product as d_i, or a known positive of q_i (another
      pair of the same query in the batch, or any (q_i, d_j) in ``known_positives``). These are
      certain false negatives.
    * the **margin mask**: s_ij > s_ii - m, computed without gradient, on a frozen ``guide``
      model's similarities when one is given, else on the model's own detached similarities.
      These are likely near-duplicates of the positive (same item, other size, colour or pack).

    The positive column is never masked. With ``symmetric=True`` the product-to-query direction
    (each d_i against all queries, with the transposed masks) is added and the two are averaged.

    The fraction of negatives each mask removed is accumulated; :meth:`pop_mask_stats` returns
    the mean since the last call (the training pipeline adds it to the Trainer's logs), so a run
    shows how much of each batch the masks took away.

    Args:
        model: SentenceTransformer model to train.
        temperature: tau, > 0. The inverse of the ``scale`` of
            :class:`MultipleNegativesRankingLoss` (``scale=20`` is ``temperature=0.05``).
        margin: m of the margin mask; None turns the margin mask off (identity mask alone).
            A positive m also masks negatives scoring within m below the positive; a negative m
            masks only negatives scoring more than -m above it. ``shopsearch train`` uses
            m = -0.1, because m >= 0 hides informative negatives along with the near-duplicates
            (benchmarks/RESULTS.md, the training section); the default, 0.05, is the plain
            reading of the mask: negatives within m of the positive.
        guide: Optional frozen SentenceTransformer whose similarities decide the margin mask.
            Its parameters are frozen and it is put in eval mode. Where its vocabulary differs
            from the model's, or its max_seq_length is shorter, each batch is decoded and
            re-tokenised for it.
        symmetric: Also add the product-to-query direction and average the two.
        known_positives: (query key, product key) pairs judged positive anywhere in the data,
            for the identity mask: a judged positive of q_i that is another query's positive or
            hard negative in the batch is not pushed away from q_i.
        guide_name: The guide's name or path for :meth:`get_config_dict` (a model loaded from a
            path does not know its own name); ignored without a guide.

    References:
        - InfoNCE: van den Oord et al., Representation Learning with Contrastive Predictive
          Coding, https://arxiv.org/abs/1807.03748
        - GISTEmbed (guide-model masking of in-batch negatives):
          https://arxiv.org/abs/2402.16829
        - docs/DESIGN.md, "Stage 1"

    Requirements:
        1. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) n-tuples
        2. For the identity mask: int keys per row, [query key, positive product key, negative
           product keys...] (product keys in column order, as
           :func:`shopsearch.training.data.build_stage1` assigns them). Without labels only the
           margin mask applies.

    Inputs:
        +-------------------------------------------------+------------------------------+
        | Inputs                                          | Labels                       |
        +=================================================+==============================+
        | (anchor, positive) pairs                        | [query key, positive key]    |
        +-------------------------------------------------+------------------------------+
        | (anchor, positive, negative_1, ..., negative_n) | [query key, product keys...] |
        +-------------------------------------------------+------------------------------+
        | (anchor, positive[, negatives...])              | none (margin mask only)      |
        +-------------------------------------------------+------------------------------+

    Recommendations:
        - Build the rows and ``known_positives`` with
          :func:`shopsearch.training.data.build_stage1`: its keys are the ones the identity mask
          compares. ``BatchSamplers.NO_DUPLICATES`` is not needed: a product repeated in a batch
          is identity-masked.

    Relations:
        - :class:`MultipleNegativesRankingLoss` is this loss without masks: with
          ``margin=None`` and no labels the two compute the same value (``scale =
          1 / temperature``); ``symmetric=True`` then equals its ``directions=("query_to_doc",
          "doc_to_query")`` with ``partition_mode="per_direction"``.
        - :class:`GISTEmbedLoss` masks in-batch negatives that a guide model scores above the
          positive. The same here: the margin mask is GIST's ``margin_strategy="absolute"``
          rule, dropping column j, without gradient, where the guide's s_ij > its s_ii - m, and
          never dropping the positive. What differs:

          * the guide is optional: without one, the model's own detached scores judge;
          * the margin: GIST's defaults to 0 (only what the guide scores above the positive)
            and may be relative to |s_ii|; here m is absolute, defaults to 0.05, may be
            negative (``shopsearch train``'s -0.1 drops only what scores more than 0.1 above
            the positive) and None turns the mask off;
          * the identity mask: GIST has no labels; here known false negatives are dropped by
            key, whatever they score;
          * the columns: GIST also contrasts anchor-anchor and positive-positive and takes at
            most one negative column; here only query-product columns count, with any number
            of hard negatives, and the product-to-query direction is optional.
        - :class:`~shopsearch.training.losses.ROARLoss` adds this masked InfoNCE
          (:func:`~shopsearch.training.losses.functional.masked_info_nce`) as its optional
          retrieval anchor.

    Example:
        ::

            from datasets import Dataset
            from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

            from shopsearch.training.losses import FalseNegativeMaskedContrastiveLoss

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            train_dataset = Dataset.from_dict({
                "anchor": ["cordless drill", "cordless drill", "garden hose"],
                "positive": [
                    "DeWalt 20V MAX cordless drill/driver kit",
                    "Makita 18V LXT cordless drill",
                    "Flexzilla 50 ft. garden hose",
                ],
                # [query key, product key]: rows 0 and 1 share query 0, so neither drill is
                # pushed away from that query as the other row's negative.
                "label": [[0, 10], [0, 11], [1, 20]],
            })
            loss = FalseNegativeMaskedContrastiveLoss(
                model, margin=-0.1, known_positives=[(0, 10), (0, 11), (1, 20)]
            )

            trainer = SentenceTransformerTrainer(
                model=model,
                train_dataset=train_dataset,
                loss=loss,
            )
            trainer.train()
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
        return self.compute_loss_from_embeddings(embeddings, labels, guide_embeddings)

    def compute_loss_from_embeddings(
        self,
        embeddings: list[Tensor],
        labels: Tensor | None,
        guide_embeddings: list[Tensor] | None = None,
    ) -> Tensor:
        """The loss for embeddings [anchor, positive, negatives...], each [B, D].

        `labels`: [B, 2 + H] int keys (see Inputs) or None; `guide_embeddings`, the guide's
        embeddings of the same columns, decide the margin mask when given.
        """
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
@misc{oord2018infonce,
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
