"""`shopsearch rules set FILE | show | test QUERY`: the merchandising rules a collection keeps
(shopsearch.search.rules for what a rule is and how rules apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.search.rules import Rule, RuleSet
from shopsearch.store.documents import existing_meta, write_rules


def set_rules(
    file: Annotated[
        Path,
        typer.Argument(
            help='Rules file (JSON): {"rules": [RULE, ...]}; an empty list removes them all.'
        ),
    ],
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Check a rules file and store it with the collection, replacing its rules: searches
    apply them from then on (a running service within a second)."""
    rules = RuleSet.from_file(file)  # checked whole before anything is written
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        existing_meta(backend)
        # A document beside the points: an embedded collection's shard stays closed, so a
        # service holding it goes on answering and reads the new rules itself.
        write_rules(backend, rules.to_dict())
        location = backend.location
    if as_json:
        print_json({"location": location, "rules": len(rules.rules)})
        return
    print(f"stored {len(rules.rules)} rule(s) with the collection at {location}")


def show(
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Print the collection's rules, as `rules set` stored them."""
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        existing_meta(backend)
        rules = RuleSet.stored(backend)
    if as_json:
        print_json(rules.to_dict(), ensure_ascii=False)
        return
    if not rules:
        print("no rules")
        return
    for rule in rules.rules:
        print(f"{rule.label}: {describe(rule)}")


def test(
    text: Annotated[str, typer.Argument(help="A query to try the rules on.")],
    filters: opt.Filters = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=10_000)] = 10,
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    model: opt.ModelDir = None,
    precision: opt.Precision = opt.DEFAULT_PRECISION,
    threads: opt.Threads = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Search QUERY with the collection's rules and show which fired and what they did (the
    answer of `shopsearch query --json`, whose `rules` lists them)."""
    from shopsearch.search.filters import parse_filters
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.search.responses import search_answer
    from shopsearch.search.rules import fired_rules

    query = Query(opt.utf8_text(text, "the query"), parse_filters(filters or []))
    options = SearchOptions(top_k=top_k)
    encoder = opt.load_encoder(model, precision, threads)
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        search = ProductSearch(backend, encoder)
        query = search.prepare(query, options)
        hits = search.search(query, options)
        doc = search_answer(search, query, filters or [], options, hits) if as_json else None
    if doc is not None:
        print_json(doc, ensure_ascii=False)
        return
    fired = fired_rules(hits)
    print(f"searched: {query.searched or query.text}")
    if not fired:
        print("no rule fired")
    for effect in fired:
        detail = ", ".join(f"{k}={v}" for k, v in effect.items() if k not in ("rule", "effect"))
        print(f"rule {effect['rule']}: {effect['effect']} ({detail})")
    for n, hit in enumerate(hits, start=1):
        print(f"{n:>3}  {hit.product_id}  {hit.payload.get('title', '')}")


def describe(rule: Rule) -> str:
    """One line a person reads: when the rule fires and what it does."""
    source: dict[str, Any] = rule.source
    when = source.get("when")
    parts = [f"when {when}" if when else "every query (catch-all)"]
    parts += [f"{key} {source[key]}" for key in ("pin", "hide", "boost", "bury") if key in source]
    return "; ".join(parts)
