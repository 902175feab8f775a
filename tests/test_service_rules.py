"""The service's merchandising rules and sorting over HTTP, on the real service (a
`shopsearch serve` process over an Edge collection of the small catalog, the real encoder):
it answers with the rules fired and the sorted results as `shopsearch query --json` does,
takes `rules=false` and `sort`, refuses a bad sort naming it, and applies rules that
`shopsearch rules set` stores while it serves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import cli, service_process

SHOES = "women's casual shoes"
# Requests compared with `shopsearch query --json`: (CLI arguments, POST body).
# The fusion named: the service's default may differ from the CLI's while it changes.
COMPARED = [
    ([SHOES, "--top-k", "5"], {"q": SHOES, "top_k": 5}),
    ([SHOES, "--sort", "price:desc", "--offset", "3"],
     {"q": SHOES, "sort": "price:desc", "offset": 3}),
    ([SHOES, "--no-rules", "--sort", "price:asc"],
     {"q": SHOES, "rules": False, "sort": "price:asc"}),
    (["gold ring", "-f", "price<=2000"], {"q": "gold ring", "filters": ["price<=2000"]}),
]  # fmt: skip
COMPARED = [([*args, "--fusion", "rrf"], {**body, "fusion": "rrf"}) for args, body in COMPARED]


def test_the_service_applies_rules_and_sorts_as_the_cli(
    exported_model: Path, small_catalog: Path, tmp_path: Path
):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path)}
    cli("ingest", str(small_catalog), "-c", "shop", "--rejects", str(tmp_path / "r.jsonl"), env=env)
    plain = json.loads(cli("query", SHOES, "-c", "shop", "--json", env=env).stdout)["results"]
    pinned = plain[4]["product_id"]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"name": "shoes", "when": {"contains": "shoes"},
         "pin": [{"product_id": pinned, "position": 1}]},
        {"name": "cheap", "boost": [{"filter": "price<=500", "by": 3}]},
    ]}))  # fmt: skip
    cli("rules", "set", str(rules), "-c", "shop", env=env)
    answers = [json.loads(cli("query", *args, "-c", "shop", "--json", env=env).stdout)
               for args, _ in COMPARED]  # fmt: skip
    assert answers[0]["results"][0]["product_id"] == pinned
    assert [r["rule"] for r in answers[0]["rules"]] == ["cheap", "shoes"]
    assert answers[2]["rules"] == [] and answers[2]["sort"] == "price:asc"
    with service_process(env, "-c", "shop") as (url, _):
        for (_, body), want in zip(COMPARED, answers, strict=True):
            response = httpx.post(f"{url}/search", json=body)
            assert response.status_code == 200, response.text
            got = response.json()
            for key in ("rules", "sort", "searched", "offset"):
                assert got[key] == want[key], (body, key)
            assert [r["product_id"] for r in got["results"]] == [
                r["product_id"] for r in want["results"]
            ], body
            scores = [r["score"] for r in want["results"]]
            assert [r["score"] for r in got["results"]] == pytest.approx(scores, abs=1e-5)
        got = httpx.get(f"{url}/search", params={"q": SHOES, "rules": "false", "sort": "price"})
        assert got.json()["rules"] == [] and got.json()["sort"] == "price:asc"
        bad = httpx.post(f"{url}/search", json={"q": SHOES, "sort": "brand:asc"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("sort 'brand:asc'")
        # `rules set` while the service holds the collection: applied within a second or so.
        rules.write_text(json.dumps([{"name": "new", "hide": [pinned]}]))
        cli("rules", "set", str(rules), "-c", "shop", env=env)
        deadline = time.monotonic() + 10
        while True:
            doc = httpx.post(f"{url}/search", json={"q": SHOES}).json()
            if [r["rule"] for r in doc["rules"]] == ["new"]:
                break
            assert time.monotonic() < deadline, doc["rules"]
            time.sleep(0.2)
        assert pinned not in [r["product_id"] for r in doc["results"]]
