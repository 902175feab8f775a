"""Hybrid product search: encode the query once, fuse dense and BM25 inside Qdrant.

The collection's metadata decides how queries are embedded (BM25 settings) and which
encoder is acceptable, so a query can never silently mix embedding spaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.errors import CollectionError, UsageError
from shopsearch.search.adaptive_fusion import DBSF_WEIGHT, PAIRS_WINDOW, WINDOW, rerank
from shopsearch.search.business_ranking import BusinessRanking, resolved
from shopsearch.search.confidence import (
    ConfidenceModel,
    check_min_confidence,
    collection_model,
    with_confidence,
)
from shopsearch.search.facets import (
    FACET_FIELDS,
    RANGE_FIELDS,
    Facets,
    count_values,
    payload_range,
)
from shopsearch.search.filters import for_collection
from shopsearch.search.learned_fusion import FusionModel, union_features
from shopsearch.search.refreshed import Refreshed
from shopsearch.search.rules import RuleSet, arrange_batch, arranges
from shopsearch.search.sorting import SortOrder
from shopsearch.search.spelling import TypoCorrector
from shopsearch.search.synonyms import (
    Applied,
    Synonyms,
    coverage_terms,
    expanded,
    stored_synonyms,
    with_synonyms,
)
from shopsearch.search.variants import FAMILY_FIELDS, collapse, deeper_limit, first_limit
from shopsearch.store.backend import (
    Backend,
    FusionMethod,
    Hit,
    SearchMode,
    SearchRequest,
    SparseVec,
    warm_up,
)
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.conditions import Condition
from shopsearch.store.documents import existing_meta, read_fusion
from shopsearch.store.schema import CollectionMeta, EncoderInfo
from shopsearch.store.word_pairs import WordPairs


@dataclass(frozen=True)
class Query:
    """A shopper's query. `searched` is the text actually searched (typos corrected) once the
    query is prepared (`ProductSearch.prepare`, `prepare_query`): it is decided once, so the
    text an encoder was started on ahead of the search (`ForkedQueryEncoder`) is the text
    searched, and its results and facets search the same text."""

    text: str
    conditions: Sequence[Condition] = ()
    query_id: str | None = None
    searched: str | None = None
    # The synonyms the searched text matched (search/synonyms.py), decided with it by
    # `ProductSearch.prepare`: their terms widen the BM25 side only. None: none applied.
    synonyms: tuple[Applied, ...] | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise UsageError("the query text is empty")


# Hits read past the end of a page, so that a tie straddling the page's end is ordered by point
# id rather than cut where Qdrant put its members: RRF's rank-based scores tie often, and a
# tie rarely runs more than one hit past a page (benchmarks/RESULTS.md section 4).
TIE_MARGIN = 2

# RRF weighs BM25's list 3 to the dense list's 1 (Qdrant divides a list's ranks by its
# weight): with equal weights the zero-shot hybrid ranks below BM25 alone on Home Depot, where
# the judged products come from the shop's lexical search. Home Depot's train queries rank
# best at 3, and its dev queries agree (benchmarks/RESULTS.md section 6).
DEFAULT_BM25_WEIGHT = 3.0


@dataclass(frozen=True)
class SearchOptions:
    mode: SearchMode = SearchMode.HYBRID
    # The default needs no judgments of the shop: DBSF, its first results re-ranked by
    # query-term coverage (shopsearch.search.adaptive_fusion).
    fusion: FusionMethod = FusionMethod.ADAPTIVE
    # RRF's weight of the BM25 list; None: the default. A weight picks RRF, the one fusion
    # with list weights, where the default fusion is asked for.
    bm25_weight: float | None = None
    top_k: int = 10
    # Results skipped before the page (families, where variants collapse): page 2 of 10 is
    # offset 10. A page is the tail of one search `offset + top_k` deep (`depth`).
    offset: int = 0
    candidates: int = 100
    exact: bool = False
    hnsw_ef: int | None = None
    fix_typos: bool = True  # a no-op on collections ingested without a vocabulary
    # One result per parent_id (shopsearch.search.variants); a no-op on catalogs without one.
    collapse_variants: bool = True
    payload_fields: list[str] | None = field(default=None)  # None: the whole payload
    # Merchandising rules and sorting (search/rules.py, search/sorting.py).
    rules: bool = True  # the collection's rules apply (`--no-rules`: off, as eval runs)
    sort: SortOrder | None = None  # None: by relevance
    # The collection's synonyms widen the BM25 side (search/synonyms.py); on in eval too.
    synonyms: bool = True
    # Business ranking weights set by hand, over the collection's stored ones where rules
    # apply (search/business_ranking.py); None: the stored ones alone.
    ranking: BusinessRanking | None = None
    # The relevance floor (search/confidence.py): each result's calibrated confidence, worked
    # out for the page where `confidence` asks for it or `min_confidence` is set; a result
    # under `min_confidence` leaves the page, which is not refilled. None: no floor.
    confidence: bool = False
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        check_min_confidence(self.min_confidence)
        if self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1 (got {self.top_k})")
        if self.offset < 0:
            raise UsageError(f"--offset must be at least 0 (got {self.offset})")
        if self.candidates < 1:
            raise UsageError(f"candidates must be at least 1 (got {self.candidates})")
        if self.bm25_weight is None:
            return
        if self.fusion is FusionMethod.ADAPTIVE and self.mode is SearchMode.HYBRID:
            object.__setattr__(self, "fusion", FusionMethod.RRF)
        # inf would reach Qdrant (and --json, as the invalid JSON `Infinity`); nan is no weight.
        if not (math.isfinite(self.bm25_weight) and self.bm25_weight > 0):
            raise UsageError(
                f"--bm25-weight must be a finite number above 0 (got {self.bm25_weight})"
            )
        # A weight the search would ignore is refused, whichever flag makes it ignored.
        if self.mode is not SearchMode.HYBRID:
            raise UsageError(
                f"--bm25-weight weighs a hybrid search's lists: --mode {self.mode.value} has "
                "none (drop --bm25-weight, or use --mode hybrid)"
            )
        if self.fusion is not FusionMethod.RRF:
            raise UsageError(
                f"--bm25-weight weighs RRF's lists: --fusion {self.fusion.value} has none "
                "(drop --bm25-weight, or use --fusion rrf)"
            )

    @property
    def depth(self) -> int:
        """Results up to the end of the page."""
        return self.offset + self.top_k

    @property
    def scores_confidence(self) -> bool:
        """Whether the results carry their confidence (`Hit.confidence`). A BM25 search
        reads one only for a floor: the cosine is part of the evidence, and a keyword search
        otherwise loads no encoder (the CLI's and the service's answers agree)."""
        if self.min_confidence is not None:
            return True
        return self.confidence and self.mode is not SearchMode.BM25

    @property
    def fused_by_rrf(self) -> bool:
        return self.mode is SearchMode.HYBRID and self.fusion is FusionMethod.RRF

    @property
    def rrf_bm25_weight(self) -> float:
        """The BM25 list's weight in this search's fusion: 1 where there is no RRF."""
        if not self.fused_by_rrf:
            return 1.0
        return DEFAULT_BM25_WEIGHT if self.bm25_weight is None else self.bm25_weight


class ProductSearch:
    def __init__(
        self, backend: Backend, encoder: TextEncoder | None, typos: TypoCorrector | None = None
    ) -> None:
        """`typos`: the collection's corrector, when the caller has read it already."""
        meta = existing_meta(backend)
        self.backend = backend
        self.meta: CollectionMeta = meta
        self.encoder = encoder
        if encoder is not None:
            meta.check_encoder(EncoderInfo.of(encoder))
        # The collection's BM25 settings, checked once: each answer's highlighting reads them.
        self.bm25_settings = Bm25Settings.from_dict(meta.bm25)
        self._bm25 = self.bm25_settings.model()
        # The query's word pairs, where the collection has its titles' (store/word_pairs.py).
        self._pairs = WordPairs(self._bm25) if meta.word_pairs else None
        self._fusion: FusionModel | None = None
        self._encoded: tuple[list[str], np.ndarray] | None = None
        self.typos = typos or TypoCorrector.stored(backend)
        # The collection's rules and synonyms, read at the first search that needs them
        # (rules.current_rules, synonyms.current_synonyms).
        self.rules: Refreshed[RuleSet] = Refreshed(lambda: RuleSet.stored(backend))
        self.synonyms: Refreshed[Synonyms] = Refreshed(lambda: stored_synonyms(self))
        self.ranking: Refreshed[BusinessRanking] = Refreshed(
            lambda: BusinessRanking.stored(backend)
        )
        # The relevance floor's model: the collection's own, else the package's prior.
        self.confidence: Refreshed[ConfidenceModel] = Refreshed(lambda: collection_model(backend))
        # Now, not at the first search: a ForkedQueryEncoder encodes meanwhile.
        warm_up(backend)

    def prepare(self, query: Query, options: SearchOptions | None = None) -> Query:
        """`query` with the text it searches decided (`prepare_query`), and its keyword
        filters pointed at the collection's normalised copies where it has them
        (`filters.for_collection`: case-forgiving filters)."""
        options = options or SearchOptions()
        prepared = prepare_query(self.typos, query, options)
        # Synonyms: matched on the searched text, typos corrected first (search/synonyms.py).
        prepared = with_synonyms(self, prepared, options)
        return replace(prepared, conditions=for_collection(prepared.conditions, self.meta))

    def searched_text(self, query: Query, options: SearchOptions | None = None) -> str:
        return self.prepare(query, options).searched or query.text

    def search(self, query: Query, options: SearchOptions | None = None) -> list[Hit]:
        return self.search_batch([query], options)[0]

    def search_batch(
        self, queries: Sequence[Query], options: SearchOptions | None = None
    ) -> list[list[Hit]]:
        options = options or SearchOptions()
        if not queries:
            return []
        # The business ranking decided once, so the searches rules make apply it too.
        options = resolved(self, options)
        if not options.scores_confidence:
            return self._ranked_batch(queries, options)
        # The page is decided first; its confidences are read for it alone.
        queries = [self.prepare(q, options) for q in queries]
        return with_confidence(self, queries, options, self._ranked_batch(queries, options))

    def _ranked_batch(self, queries: Sequence[Query], options: SearchOptions) -> list[list[Hit]]:
        # Rules and sorting apply to the ranking before the page is cut; each page is a
        # `rules.Arranged` saying which rules fired (search/rules.py).
        if arranges(self, queries, options):
            return list(arrange_batch(self, queries, options))
        if options.mode is SearchMode.HYBRID and options.fusion is FusionMethod.LEARNED:
            return self._learned(queries, options)
        if options.mode is SearchMode.HYBRID and options.fusion is FusionMethod.ADAPTIVE:
            return self._adaptive(queries, options)
        queries = [self.prepare(q, options) for q in queries]
        texts = [q.searched or q.text for q in queries]
        dense = None
        if options.mode is not SearchMode.BM25:
            if self.encoder is None:
                raise UsageError(f"--mode {options.mode.value} needs an encoder")
            dense = self._encode(texts)
        payload = payload_fields(options)
        collapsing = self._collapses(options)
        # A few hits past the page, so that a tie at its end is ordered by point id (as
        # `hits_by_score` orders it) rather than cut where Qdrant happened to put its members;
        # a collapsing search reads several pages past it anyway.
        limit = first_limit(options.depth) if collapsing else options.depth + TIE_MARGIN
        requests = []
        for i, q in enumerate(queries):
            sparse = None if options.mode is SearchMode.DENSE else self._sparse(texts[i], q)
            requests.append(
                SearchRequest(
                    dense=None if dense is None else dense[i],
                    sparse=sparse,
                    conditions=q.conditions,
                    mode=options.mode,
                    fusion=options.fusion,
                    bm25_weight=options.rrf_bm25_weight,
                    limit=limit,
                    candidates=max(options.candidates, limit),
                    exact=options.exact,
                    hnsw_ef=options.hnsw_ef,
                    with_payload=payload,
                    formula=self._formula(options, limit),
                )
            )
        results = self.backend.search_batch(requests)
        if collapsing:
            results = self._one_per_family(requests, results, options.depth)
        return [hits[options.offset : options.depth] for hits in results]

    def facets(
        self, query: Query, options: SearchOptions, fields: Sequence[str], limit: int
    ) -> Facets:
        """Each field's `limit` values most held among the query's best `options.candidates`
        products (every variant counted), by the same search as its results: the counts of
        a results page's filter sidebar. A semantic search ranks every product rather than
        matching some, so "the results" are these best ones, as where Elasticsearch counts
        a kNN search's k nearest. Counted from their payloads (`count_values`); a number
        field gets its range among them."""
        best = self.search(
            query,
            replace(
                options,
                top_k=options.candidates,
                offset=0,
                payload_fields=list(fields),
                collapse_variants=False,
                # Counted among the products a floor keeps; no confidence read without one.
                confidence=False,
            ),
        )
        payloads = [h.payload for h in best]
        counts = {n: count_values(payloads, n, limit) for n in fields if n in FACET_FIELDS}
        ranges = {n: payload_range(payloads, n) for n in fields if n in RANGE_FIELDS}
        return Facets(len(best), counts, ranges)

    def catalog_facets(
        self, conditions: Sequence[Condition], fields: Sequence[str], limit: int
    ) -> Facets:
        """Each field's `limit` values most held among all products passing `conditions` (a
        number field's range): a category page's sidebar, where no query text ranks the
        products."""
        conditions = for_collection(conditions, self.meta)  # case-forgiving filters
        counts = {n: self.backend.facet(n, conditions, limit) for n in fields if n in FACET_FIELDS}
        ranges = {n: self.backend.value_range(n, conditions) for n in fields if n in RANGE_FIELDS}
        return Facets(self.backend.count(conditions), counts, ranges)

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The queries' vectors, kept for the next search of the same texts (a query's
        results, then its facets): a one-shot query's encoder answers its first texts from
        a forked child and would load in-process for a second encoding."""
        assert self.encoder is not None
        cached = self._encoded  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != texts:
            cached = (texts, self.encoder.encode_queries(texts))
            self._encoded = cached
        return cached[1]

    def query_vectors(
        self, query: Query, options: SearchOptions | None = None
    ) -> tuple[Query, np.ndarray | None, SparseVec]:
        """The prepared query with the dense and BM25 vectors its search sends to Qdrant
        (dense None without an encoder): for a service that queries the collection itself
        and must embed as this collection does."""
        prepared = self.prepare(query, options)
        text = prepared.searched or prepared.text
        dense = None if self.encoder is None else self._encode([text])[0]
        return prepared, dense, self._sparse(text, prepared)

    def query_pairs(self, text: str) -> list[int] | None:
        """The word pairs of a searched text, which the default fusion compares with each
        title's (store/word_pairs.py); None where the collection has none."""
        return None if self._pairs is None else self._pairs.of(text)

    def _collapses(self, options: SearchOptions) -> bool:
        """Whether results are collapsed to one per family: asked for, and the collection may
        hold families (its metadata does not say it holds none, where every product is a
        family of one and collapsing, with its deeper first search, would change nothing)."""
        return options.collapse_variants and self.meta.variants is not False

    @property
    def bm25_model(self) -> Any:
        """The collection's BM25 tokenizer (`qdrant_edge.Bm25`)."""
        return self._bm25

    def _sparse(self, text: str, query: Query | None = None) -> SparseVec:
        """The query's BM25 vector, by the collection's BM25 settings, with the terms of the
        synonyms the prepared `query` matched (`synonyms.expanded`)."""
        vec = self._bm25.embed_query(text)
        plain = SparseVec(list(vec.indices), list(vec.values))
        return expanded(plain, None if query is None else query.synonyms)

    def fusion_model(self) -> FusionModel:
        """The collection's learned fusion, checked against its encoder and BM25 settings."""
        if self._fusion is None:
            stored = read_fusion(self.backend)
            if stored is None:
                raise UsageError(
                    f"--fusion learned: the collection at {self.backend.location} has no learned "
                    "fusion; fit one with `shopsearch fusion fit --judgments FILE`"
                )
            self._fusion = self._checked_fusion(stored)
        return self._fusion

    def _checked_fusion(self, stored: dict[str, Any]) -> FusionModel:
        model = FusionModel.from_dict(stored, self.backend.location)
        fitted = model.fitted_on
        if (fitted.get("encoder"), fitted.get("bm25")) != (
            self.meta.encoder.fingerprint,
            self.meta.bm25,
        ):
            raise CollectionError(
                f"the learned fusion at {self.backend.location} was fit for another encoder "
                "or BM25 setting than the collection's: fit it again with `shopsearch fusion fit`"
            )
        return model

    def fusion_info(self) -> dict[str, Any] | None:
        """The collection's learned fusion as `shopsearch info` shows it (None: there is
        none): what it was fit on, and whether `--fusion learned` can use it."""
        try:
            stored = read_fusion(self.backend)
        except CollectionError as exc:
            return {"usable": False, "problem": str(exc)}
        if stored is None:
            return None
        fitted = stored.get("fitted_on") if isinstance(stored.get("fitted_on"), dict) else {}
        info: dict[str, Any] = {
            "judgments": fitted.get("judgments"),
            "queries": fitted.get("queries"),
            "candidates": stored.get("depth"),
            "usable": True,
        }
        try:
            self._checked_fusion(stored)
        except CollectionError as exc:
            info.update(usable=False, problem=str(exc))
        return info

    def learned_candidates(
        self, queries: Sequence[Query], options: SearchOptions
    ) -> list[tuple[list[Hit], np.ndarray]]:
        """Each query's candidates from both retrievers (`options.candidates` each) with the
        learned fusion's features: what the model scores, and what `shopsearch fusion fit`
        fits it on."""
        if self.encoder is None:
            raise UsageError("learned fusion needs an encoder")
        queries = [self.prepare(q, options) for q in queries]
        texts = [q.searched or q.text for q in queries]
        dense = self._encode(texts)
        payload = payload_fields(options)
        terms, requests = [], []
        for i, q in enumerate(queries):
            sparse = self._sparse(texts[i], q)
            terms.append(sparse.indices)
            for mode in (SearchMode.DENSE, SearchMode.BM25):
                requests.append(
                    SearchRequest(
                        dense=dense[i],
                        sparse=sparse,
                        conditions=q.conditions,
                        mode=mode,
                        limit=options.candidates,
                        exact=options.exact,
                        hnsw_ef=options.hnsw_ef,
                        with_payload=payload,
                        with_terms=True,
                    )
                )
        results = self.backend.search_batch(requests)
        out = []
        for i, q in enumerate(queries):
            # Coverage of the words typed, which their synonyms cover too.
            sparse = SparseVec(terms[i], [])
            own, dense_hits = coverage_terms(sparse, q.synonyms, results[2 * i])
            _, bm25_hits = coverage_terms(sparse, q.synonyms, results[2 * i + 1])
            out.append(union_features(own, dense_hits, bm25_hits, options.candidates))
        return out

    def _learned(self, queries: Sequence[Query], options: SearchOptions) -> list[list[Hit]]:
        """The union of both retrievers' candidates, ranked by the collection's model, each
        retriever searched as deep as when the model was fit (`--candidates` of the fit).

        Variants collapse within the union (up to twice `candidates` products): it holds
        more families than a first fused page, so there is no deeper search. The candidates
        carry only the family fields, or no payload where the collection has no families;
        the page's payloads are read afterwards, for a page of products rather than the whole
        union, which is a measurable share of a query's time. Pages end with the union."""
        model = self.fusion_model()
        families = self._collapses(options)
        carried = list(FAMILY_FIELDS) if families else []
        # The business ranking is added to the model's score here, from the payload.
        ranking = options.ranking if options.ranking else None
        if ranking is not None:
            ranking.check(self.meta)
            carried += [k for k in ranking.payload_keys() if k not in carried]
        # The depth the model was fit at: another would shift its rank and presence features.
        light = replace(
            options, candidates=model.depth, payload_fields=carried, collapse_variants=families
        )
        pages = []
        for hits, x in self.learned_candidates(queries, light):
            scored = model.score(x)
            if ranking is not None:
                scored = scored + np.array([ranking.bonus(h.payload, self.meta) for h in hits])
            # Scored before collapsing: a family shown by another variant than its best
            # (an in-stock one) keeps the family's score, as in the other fusions.
            ranked = [
                replace(hits[j], score=float(scored[j]), terms=())
                for j in np.argsort(-scored, kind="stable")
            ]
            ranked = collapse(ranked, options.depth) if families else ranked[: options.depth]
            pages.append(ranked[options.offset :])
        wanted = payload_fields(options)
        if wanted is not True and set(wanted) <= set(carried):
            stored = {h.point_id: h.payload for page in pages for h in page}
        else:
            ids = [h.point_id for page in pages for h in page]
            stored = self.backend.payloads(ids) if ids else {}

        def shown(payload: dict[str, Any]) -> dict[str, Any]:
            return payload if wanted is True else {k: payload[k] for k in wanted if k in payload}

        return [
            [replace(h, payload=shown(stored.get(h.point_id, h.payload))) for h in page]
            for page in pages
        ]

    def _adaptive(self, queries: Sequence[Query], options: SearchOptions) -> list[list[Hit]]:
        """One DBSF query (both retrievers `--candidates` deep, filtered) whose hits come
        back with their BM25 term ids and no payload but their family's fields, re-ranked
        by `adaptive_fusion.rerank`, collapsed to families where the collection may hold
        some, and the page's payloads read afterwards (for a page of products rather than
        the whole list).

        The fused list is read to the page's end, and at least the window deep (`WINDOW`,
        or `PAIRS_WINDOW` where the collection has its titles' word pairs); where it
        collapses to fewer families than the page needs, deeper (`variants.deeper_limit`),
        as the RRF search does. Each retriever then reads as deep as the fused list
        (`--candidates` at least), which moves DBSF's normalisation: only a page of
        families past `--candidates` hits can be ranked differently from a shallower one."""
        if self.encoder is None:
            raise UsageError("--mode hybrid needs an encoder")
        queries = [self.prepare(q, options) for q in queries]
        texts = [q.searched or q.text for q in queries]
        dense = self._encode(texts)
        families = self._collapses(options)
        carried = list(FAMILY_FIELDS) if families else []
        wanted = payload_fields(options)
        # What the page shows comes with the hits when it is no more than they carry anyway
        # (an evaluation's product ids); otherwise it is read for the page alone.
        inline = wanted is not True and len(wanted) <= len(FAMILY_FIELDS)
        fields = sorted({*carried, *wanted}) if inline else carried
        sparse = [self._sparse(t, q) for t, q in zip(texts, queries, strict=True)]
        # The pairs of the words typed (their typos corrected), not of their synonyms.
        pairs = [self._pairs.of(t) if self._pairs else [] for t in texts]
        window = WINDOW if self._pairs is None else PAIRS_WINDOW
        # The window at least, so that a page of families reads the list a page without
        # them reads, DBSF normalised alike, unless it must read past it.
        first = max(window, first_limit(options.depth) if families else options.depth)
        limits = [first] * len(queries)
        pages: list[list[Hit]] = [[] for _ in queries]
        pending = list(range(len(queries)))
        while pending:
            requests = [
                SearchRequest(
                    dense=dense[i],
                    sparse=sparse[i],
                    conditions=queries[i].conditions,
                    fusion=FusionMethod.DBSF,
                    limit=limits[i],
                    candidates=max(options.candidates, limits[i]),
                    exact=options.exact,
                    hnsw_ef=options.hnsw_ef,
                    with_payload=fields or False,
                    with_terms=True,
                    # Pairs to compare where the query has some (two words or more).
                    with_pairs=bool(pairs[i]),
                    # In DBSF's units, so the re-rank's 0.5 * score adds the terms as they are.
                    formula=self._formula(options, limits[i], 1 / DBSF_WEIGHT),
                )
                for i in pending
            ]
            deeper = []
            for i, hits in zip(pending, self.backend.search_batch(requests), strict=True):
                # Coverage of the words typed, which their synonyms cover too.
                own, covered = coverage_terms(sparse[i], queries[i].synonyms, hits)
                if not families:
                    pages[i] = rerank(own, covered, options.depth, pairs[i], window)
                    continue
                collapsed = collapse(rerank(own, covered, None, pairs[i], window), options.depth)
                limit = deeper_limit(limits[i], hits, options.depth)
                if len(collapsed) < options.depth and limit is not None:
                    limits[i] = limit
                    deeper.append(i)
                else:
                    pages[i] = collapsed
            pending = deeper
        cut = [page[options.offset :] for page in pages]
        if inline:
            return cut
        ids = [h.point_id for page in cut for h in page]
        stored = self.backend.payloads(ids) if ids else {}

        def shown(payload: dict[str, Any]) -> dict[str, Any]:
            return payload if wanted is True else {k: payload[k] for k in wanted if k in payload}

        return [
            [
                Hit(
                    h.point_id,
                    h.score,
                    shown(stored.get(h.point_id, h.payload)),
                    h.other_variants,
                    coverage=h.coverage,
                )
                for h in page
            ]
            for page in cut
        ]

    def _formula(self, options: SearchOptions, limit: int, unit: float = 1.0) -> Any:
        """The business ranking's formula over the search's first `candidates` (the page's
        end, if deeper), or None (search/business_ranking.py)."""
        if options.ranking is None:
            return None
        return options.ranking.formula(self.meta, max(options.candidates, limit), unit)

    def _one_per_family(
        self, requests: list[SearchRequest], results: list[list[Hit]], top_k: int
    ) -> list[list[Hit]]:
        """Collapse each query's hits to families, searching deeper (a longer fused list from
        deeper prefetches) the queries whose hits held fewer than `top_k` families."""
        results = list(results)
        pending = list(range(len(requests)))
        while pending:
            deeper: dict[int, SearchRequest] = {}
            for i in pending:
                limit = deeper_limit(requests[i].limit, results[i], top_k)
                if limit is not None:
                    candidates = max(requests[i].candidates, limit)
                    deeper[i] = replace(requests[i], limit=limit, candidates=candidates)
            if deeper:
                for i, hits in zip(
                    deeper, self.backend.search_batch(list(deeper.values())), strict=True
                ):
                    requests[i], results[i] = deeper[i], hits
            pending = list(deeper)
        return [collapse(hits, top_k) for hits in results]


def payload_fields(options: SearchOptions) -> bool | list[str]:
    """What a search reads of each hit's payload: all of it, or the asked fields plus those
    collapsing variants needs."""
    if options.payload_fields is None:
        return True
    fields = list(options.payload_fields)
    if options.collapse_variants:
        fields += [f for f in FAMILY_FIELDS if f not in fields]
    return fields


def prepare_query(typos: TypoCorrector, query: Query, options: SearchOptions) -> Query:
    """`query` with `searched` set: its text, typos corrected unless `options` turn that off.
    A query already prepared is returned as it is. A function, not only a method: the CLI
    prepares a one-shot query before a ProductSearch exists, to encode it in a forked child
    while the collection opens."""
    if query.searched is not None:
        return query
    searched = typos.correct(query.text) if options.fix_typos else query.text
    return replace(query, searched=searched)
