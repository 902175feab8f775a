"""`shopsearch ranking set FILE | show`: the business ranking a collection keeps
(shopsearch.search.business_ranking for the formula and the fields it reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.search.business_ranking import BusinessRanking
from shopsearch.store.documents import existing_meta, write_ranking


def set_ranking(
    file: Annotated[
        Path,
        typer.Argument(
            help='Ranking file (JSON): {"weights": {FIELD: WEIGHT, ...}, "in_stock_first": '
            "BOOL}; FIELD a rank field of the collection (`ingest --rank-field`)."
        ),
    ],
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Check a ranking file and store it with the collection, replacing its ranking:
    searches apply it from then on, as they apply the rules (a running service within a
    second)."""
    ranking = BusinessRanking.from_file(file)  # checked whole before anything is written
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        meta = existing_meta(backend)
        ranking.check(meta, f"{file.name}: weights:")
        # A document beside the points, as the rules are.
        write_ranking(backend, ranking.to_dict())
        location = backend.location
    if as_json:
        print_json({"location": location, **ranking.to_dict()})
        return
    print(f"stored the ranking {_described(ranking)} with the collection at {location}")


def show(
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Print the collection's ranking, as `ranking set` stored it, and its rank fields."""
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        meta = existing_meta(backend)
        ranking = BusinessRanking.stored(backend)
    if as_json:
        print_json({**ranking.to_dict(), "rank_fields": meta.rank_fields})
        return
    fields = ", ".join(f"{n} (scale {k:g})" for n, k in meta.rank_fields.items()) or "none"
    print(f"rank fields: {fields}")
    print(f"ranking: {_described(ranking)}")


def _described(ranking: BusinessRanking) -> str:
    weights = ", ".join(f"{n}:{w:g}" for n, w in ranking.weights) or "no weights"
    return weights + (", in stock first" if ranking.in_stock_first else "")
