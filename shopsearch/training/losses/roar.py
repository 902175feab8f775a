"""Stage 2: ROAR, a listwise loss that aligns graded groups by their relative odds.

Stage 1 only knows "substitute or better". Shops also need the order below that: an exact match
above a substitute, a substitute above a complement, a complement above junk. ROAR
(docs/DESIGN.md, "Stage 2: ROAR") compares the size-normalised softmax mass of each grade
group per query, only between consecutive non-empty grades, so variable-size groups and
missing grades are handled without inventing pairs. `ROARDataCollator`, which lays a batch out
the way the loss reads it, lives here beside it. Needs the `train` extra; never imported on
the query path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shopsearch.training.losses.functional import masked_info_nce

# Fill value for "not in this set" logits. Finite on purpose: -inf would make the gradients of
# masked-out (but still computed) entries NaN, and 0 * NaN survives torch.where. Scores are
# computed in float32 and |cos/tau| <= 1/tau, so e^(NEG - z) underflows to exactly 0.
_NEG = -1.0e9

PADDING_GRADE = -1


def roar_loss_from_scores(
    scores: Tensor,
    grades: Tensor,
    temperature: float = 0.05,
    beta: float = 1.0,
    margins: float | Sequence[float] = 0.0,
) -> Tensor:
    r"""ROAR on a padded score matrix; see `ROARLoss` for the math.

    `scores` [B, K]: cos(q, d_k) per query and candidate slot. `grades` [B, K] int: the grade
    level (0 = worst) of each candidate, `PADDING_GRADE` (-1) for empty slots. `margins`: one
    log-odds margin per adjacent level pair (index l = between level l+1 and l), or a float for
    all; a pair of non-empty levels a > b that skips empty levels gets the sum of the margins in
    between. The loss is the mean, over queries with at least two non-empty levels, of each
    query's mean pair loss; with no such query it is 0 (still connected to `scores`).
    """
    if scores.shape != grades.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and grades {tuple(grades.shape)} differ")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    grades = grades.to(device=scores.device, dtype=torch.long)
    valid = grades >= 0
    n_levels = max(int(grades.max().item()) + 1, 1) if grades.numel() else 1
    gamma = _pair_margins(margins, n_levels, scores.device)  # [L, L], gamma[a, b]

    z = (scores.float() / temperature).masked_fill(~valid, _NEG)
    log_p = z - torch.logsumexp(z, dim=1, keepdim=True)  # softmax over the query's candidates

    levels = torch.arange(n_levels, device=scores.device).view(1, n_levels, 1)
    member = grades.unsqueeze(1) == levels  # [B, L, K]; padding (-1) is in no level
    outside = valid.unsqueeze(1) & ~member
    counts = member.sum(-1)  # [B, L]
    present = counts > 0
    log_p_l = log_p.unsqueeze(1).expand_as(member)
    # l(G) = log P - log(1 - P), P = S/n, S = sum_G p. Since 1 - S = sum_{not G} p:
    # 1 - P = (n - 1 + sum_{not G} p) / n, so l(G) = log S - log(n - 1 + sum_{not G} p),
    # every term a logsumexp: no cancellation in 1 - P even when P -> 1 at small tau.
    log_in = torch.logsumexp(log_p_l.masked_fill(~member, _NEG), dim=-1)
    log_out = torch.logsumexp(log_p_l.masked_fill(~outside, _NEG), dim=-1)
    log_n_minus_1 = torch.where(
        counts > 1, torch.log((counts - 1).clamp(min=1).float()), torch.full_like(log_in, _NEG)
    )
    log_odds = log_in - torch.logaddexp(log_n_minus_1, log_out)  # [B, L]

    # Consecutive non-empty levels a > b: both present, none present strictly between.
    cum = present.long().cumsum(-1)  # inclusive
    between = (cum - present.long()).unsqueeze(2) - cum.unsqueeze(1)  # [B, a, b]
    upper = torch.ones(n_levels, n_levels, dtype=torch.bool, device=scores.device).tril(-1)
    pairs = upper & present.unsqueeze(2) & present.unsqueeze(1) & (between == 0)

    diff = log_odds.unsqueeze(2) - log_odds.unsqueeze(1)  # l(G_a) - l(G_b)
    pair_loss = F.softplus(-(beta * diff - gamma))  # -log sigmoid(beta * diff - gamma)
    pair_loss = torch.where(pairs, pair_loss, torch.zeros_like(pair_loss))
    n_pairs = pairs.sum((1, 2))
    per_query = pair_loss.sum((1, 2)) / n_pairs.clamp(min=1)
    n_queries = (n_pairs > 0).sum()
    return per_query.sum() / n_queries.clamp(min=1)


def _pair_margins(margins: float | Sequence[float], n_levels: int, device: Any) -> Tensor:
    if isinstance(margins, (int, float)):
        adjacent = [float(margins)] * max(n_levels - 1, 0)
    else:
        adjacent = [float(m) for m in margins]
        if len(adjacent) < n_levels - 1:
            raise ValueError(
                f"{len(adjacent)} margins for {n_levels} grade levels: need one per adjacent pair"
            )
    cumulative = torch.tensor([0.0, *adjacent], device=device).cumsum(0)[:n_levels]
    return cumulative.unsqueeze(1) - cumulative.unsqueeze(0)  # [a, b] = sum margins[b:a]


class ROARLoss(nn.Module):
    r"""ROAR: Relative Odds Alignment for Retrieval (listwise, graded, variable-size groups).

    Per query q with candidates d_k of ordinal grade levels (0 = worst), groups G_l:

    .. math::

        z_k = \cos(q, d_k) / \tau, \qquad p = \mathrm{softmax}(z) \text{ over q's candidates}

        P(G) = \frac{1}{|G|} \sum_{k \in G} p_k, \qquad l(G) = \log P(G) - \log(1 - P(G))

        L_{ROAR}(q) = \frac{1}{|C_q|} \sum_{(a, b) \in C_q}
            -\log \sigma\big(\beta\,(l(G_a) - l(G_b)) - \gamma_{ab}\big)

    C_q = pairs of consecutive non-empty levels a > b (the full order follows by transitivity);
    gamma_ab = the log-odds-ratio margin of the pair. Normalising P(G) by the group's size keeps
    a grade with many candidates from outweighing one with few. A query with a single non-empty
    level contributes nothing; the batch loss is the mean over queries that have a pair (0,
    with a valid graph, if none has). l(G) is computed from logsumexps only, so it stays finite
    when P -> 1 at small tau.

    With ``anchor_weight`` lambda > 0 the stage-1 loss (masked InfoNCE: the query against its
    best candidate and the other queries' candidates in the batch; the query's own other
    candidates are identity-masked, since ROAR orders them) is added as lambda * L_anchor, so
    that stage 2 keeps retrieving while it learns the order. Only a query whose best candidate
    is a stage-1 positive (level >= ``anchor_min_grade``) is anchored: a Complement is not a
    retrieval positive.

    Args:
        model: SentenceTransformer model to train.
        temperature: tau of the softmax over each query's candidates, > 0.
        beta: Scale of the log-odds difference of a pair.
        margins: gamma: one log-odds margin per adjacent level pair (index l: between level
            l+1 and level l), or one float for all of them. A pair of non-empty levels that
            skips empty levels gets the sum of the margins in between.
        anchor_weight: lambda of the retrieval anchor; 0 turns it off.
        anchor_temperature: tau of the anchor's InfoNCE (``shopsearch train`` passes stage 1's).
        anchor_margin: m of the anchor's margin mask, None for none (stage 1's, likewise).
        anchor_min_grade: The lowest level a query's best candidate may have for the query to be
            anchored; ``shopsearch train`` passes
            :attr:`shopsearch.training.data.GradeMap.positive_level`.

    References:
        - ROAR: Relative Odds Alignment for Retrieval. Implemented from the paper's abstract as
          docs/DESIGN.md ("Stage 2: ROAR") reads it; authors, venue and year are not recorded.
        - The anchor's InfoNCE: van den Oord et al., https://arxiv.org/abs/1807.03748

    Requirements:
        1. Per query, a list of candidates and one ordinal grade per candidate (0 = worst);
           any number of candidates, but at least two grade levels for the query to contribute
        2. :class:`ROARDataCollator` as the Trainer's ``data_collator``

    Inputs:
        +------------------------------------+--------------------------------------------+
        | Inputs                             | Labels                                     |
        +====================================+============================================+
        | (query, [candidate_1, ...]) rows   | [grade_1, ...]: one int >= 0 per candidate |
        +------------------------------------+--------------------------------------------+

        :class:`ROARDataCollator` turns a batch of such rows into ``sentence_features`` =
        [queries (B), candidates (all queries' candidates, flattened row by row)] and
        ``labels`` [B, K] int grades padded with -1: row i's candidates are the non-negative
        entries of row i, in order.

    Relations:
        - :class:`CoSENTLoss` also learns an order from graded labels, but pairwise: every two
          (text, text) pairs of the batch whose labels differ. ROAR is listwise within one
          query and compares grade groups, not single pairs, so groups of any size and
          missing grades need no invented pairs.
        - :class:`~sentence_transformers.cross_encoder.losses.ListNetLoss` is listwise over a
          query's candidates too, for cross-encoders, and fits the softmax to one built from
          the labels; ROAR takes the softmax over a bi-encoder's cosines and only asks each
          grade group for more odds than the next lower one, by a margin.
        - :class:`~shopsearch.training.losses.FalseNegativeMaskedContrastiveLoss` is the
          stage-1 loss; its masked InfoNCE
          (:func:`~shopsearch.training.losses.functional.masked_info_nce`) is the retrieval
          anchor here.

    Example:
        ::

            from datasets import Dataset
            from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

            from shopsearch.training.losses import ROARLoss
            from shopsearch.training.losses.roar import ROARDataCollator

            model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            train_dataset = Dataset.from_dict({
                "query": ["cordless drill", "garden hose"],
                "candidates": [
                    [
                        "DeWalt 20V MAX cordless drill",
                        "Ryobi corded hammer drill",
                        "29-piece drill bit set",
                        "patio umbrella",
                    ],
                    ["Flexzilla 50 ft. garden hose", "hose reel cart", "hose nozzle"],
                ],
                # ESCI levels: 3 Exact, 2 Substitute, 1 Complement, 0 Irrelevant
                "label": [[3, 2, 1, 0], [3, 1, 1]],
            })
            loss = ROARLoss(model, margins=0.1, anchor_weight=0.5, anchor_min_grade=2)

            trainer = SentenceTransformerTrainer(
                model=model,
                train_dataset=train_dataset,
                loss=loss,
                data_collator=ROARDataCollator(model.preprocess),
            )
            trainer.train()
    """

    def __init__(
        self,
        model: Any,
        temperature: float = 0.05,
        beta: float = 1.0,
        margins: float | Sequence[float] = 0.0,
        anchor_weight: float = 0.0,
        anchor_temperature: float = 0.05,
        anchor_margin: float | None = 0.05,
        anchor_min_grade: int = 1,
    ) -> None:
        super().__init__()
        if temperature <= 0 or anchor_temperature <= 0:
            raise ValueError("temperatures must be > 0")
        self.model = model
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.margins: float | list[float] = (
            float(margins) if isinstance(margins, (int, float)) else [float(m) for m in margins]
        )
        self.anchor_weight = float(anchor_weight)
        self.anchor_temperature = float(anchor_temperature)
        self.anchor_margin = None if anchor_margin is None else float(anchor_margin)
        self.anchor_min_grade = int(anchor_min_grade)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if len(features) != 2:
            raise ValueError("ROARLoss expects (queries, flattened candidates) features")
        queries = self.model(features[0])["sentence_embedding"]
        candidates = self.model(features[1])["sentence_embedding"]
        return self.compute_loss_from_embeddings([queries, candidates], labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The loss for embeddings [queries [B, D], candidates [N, D]] and grades `labels`.

        `labels` [B, K]: each query's candidate grades, padded with -1; the N candidates are
        the graded slots flattened row by row, as `ROARDataCollator` lays them out.
        """
        if len(embeddings) != 2:
            raise ValueError("ROARLoss expects (queries, flattened candidates) embeddings")
        queries, candidates = embeddings
        grades = labels.to(device=queries.device, dtype=torch.long)
        valid = grades >= 0
        if int(valid.sum()) != candidates.size(0):
            raise ValueError(
                f"{candidates.size(0)} candidate embeddings for {int(valid.sum())} graded slots"
            )
        q = F.normalize(queries, dim=-1)
        c = F.normalize(candidates, dim=-1)
        slots = torch.zeros(
            (*grades.shape, c.size(-1)), dtype=c.dtype, device=c.device
        ).masked_scatter(valid.unsqueeze(-1), c)
        scores = torch.einsum("bd,bkd->bk", q, slots)
        loss = roar_loss_from_scores(scores, grades, self.temperature, self.beta, self.margins)
        if self.anchor_weight > 0:
            loss = loss + self.anchor_weight * self._anchor_loss(q, c, grades, valid)
        return loss

    def _anchor_loss(self, q: Tensor, c: Tensor, grades: Tensor, valid: Tensor) -> Tensor:
        owner = torch.arange(grades.size(0), device=grades.device).unsqueeze(1).expand_as(grades)
        owner = owner[valid]  # [N]: which query each flattened candidate belongs to
        # Each query's best candidate (first of its top grade) is its positive.
        best = torch.where(valid, grades, torch.full_like(grades, -2)).argmax(dim=1)
        offsets = valid.long().cumsum(1) - 1  # flattened position within the row
        row_start = torch.cat([valid.new_zeros(1, dtype=torch.long), valid.sum(1).cumsum(0)[:-1]])
        positive = row_start + offsets.gather(1, best.unsqueeze(1)).squeeze(1)
        keep = grades.gather(1, best.unsqueeze(1)).squeeze(1) >= self.anchor_min_grade
        if not bool(keep.any()):
            return q.sum() * 0.0
        scores = q[keep] @ c.T
        rows = torch.nonzero(keep).squeeze(1)
        identity = owner.unsqueeze(0) == rows.unsqueeze(1)  # own candidates: ROAR orders them
        loss, _, _ = masked_info_nce(
            scores, positive[keep], identity, self.anchor_temperature, self.anchor_margin
        )
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "beta": self.beta,
            "margins": self.margins,
            "anchor_weight": self.anchor_weight,
            "anchor_temperature": self.anchor_temperature,
            "anchor_margin": self.anchor_margin,
            "anchor_min_grade": self.anchor_min_grade,
        }

    @property
    def citation(self) -> str:
        return """
@misc{roar,
    title={ROAR: Relative Odds Alignment for Retrieval},
    author={unknown: see docs/DESIGN.md},
    note={Implemented from the paper's abstract as described in shopsearch's
          docs/DESIGN.md ("Stage 2: ROAR"); authors, venue and year not recorded there},
}
"""


@dataclass
class ROARDataCollator:
    """Batches rows of (query, candidates list, grades list) for `ROARLoss`.

    Only real candidates are tokenised (no padding texts are encoded); the grades come back as
    a [B, K_max] tensor padded with -1, which tells the loss which query owns which candidate.
    `preprocess_fn` is the model's `preprocess` (tokenisation), as in sentence-transformers'
    own collator.
    """

    preprocess_fn: Any
    query_column: str = "query"
    candidates_column: str = "candidates"
    grades_column: str = "label"
    valid_label_columns: list[str] = field(default_factory=lambda: ["label"])

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        queries = [row[self.query_column] for row in features]
        candidates = [text for row in features for text in row[self.candidates_column]]
        grade_rows = [list(row[self.grades_column]) for row in features]
        for row in features:
            if len(row[self.candidates_column]) != len(row[self.grades_column]):
                raise ValueError("each row needs exactly one grade per candidate")
        width = max((len(g) for g in grade_rows), default=0)
        label = torch.full((len(features), width), PADDING_GRADE, dtype=torch.long)
        for i, row_grades in enumerate(grade_rows):
            if any(g < 0 for g in row_grades):
                raise ValueError("grades must be >= 0 (-1 is reserved for padding)")
            label[i, : len(row_grades)] = torch.tensor(row_grades, dtype=torch.long)
        batch: dict[str, Any] = {"label": label}
        for name, texts in (("query", queries), ("candidates", candidates)):
            for key, value in self.preprocess_fn(texts, prompt=None, task=None).items():
                batch[f"{name}_{key}"] = value
        return batch
