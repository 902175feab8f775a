"""`shopsearch synonyms set FILE | show`: the synonyms a collection keeps
(shopsearch.search.synonyms for the file and how a query uses them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.search.synonyms import SynonymSet
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import existing_meta, write_synonyms


def set_synonyms(
    file: Annotated[
        Path,
        typer.Argument(
            help='Synonyms file (JSON): {"synonyms": [{"words": [...]} | {"from": ..., '
            '"to": [...]}, ...]}; an empty list removes them all.'
        ),
    ],
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Check a synonyms file and store it with the collection, replacing its synonyms:
    searches use them from then on (a running service within a second)."""
    synonyms = SynonymSet.from_file(file)  # checked whole before anything is written
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        meta = existing_meta(backend)
        # Each phrase must hold a word the collection's BM25 tokenizer searches.
        synonyms.compiled(Bm25Settings.from_dict(meta.bm25).model(), file.name)
        # A document beside the points, as the rules are: a service holding an embedded
        # collection goes on answering and reads the new synonyms itself.
        write_synonyms(backend, synonyms.to_dict())
        location = backend.location
    count = len(synonyms.entries)
    if as_json:
        print_json({"location": location, "synonyms": count})
        return
    entries = "entry" if count == 1 else "entries"
    print(f"stored {count} synonym {entries} with the collection at {location}")


def show(
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Print the collection's synonyms, as `synonyms set` stored them."""
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        existing_meta(backend)
        synonyms = SynonymSet.stored(backend)
    if as_json:
        print_json(synonyms.to_dict(), ensure_ascii=False)
        return
    if not synonyms:
        print("no synonyms")
        return
    for entry in synonyms.entries:
        if entry.two_way:
            print(f"{entry.index}: {' = '.join(entry.sources)}")
        else:
            print(f"{entry.index}: {' | '.join(entry.sources)} -> {', '.join(entry.targets)}")
