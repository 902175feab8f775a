"""The CLI as a user runs it: separate processes, exit codes, stdout/stderr."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"


def run_cli(*args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=True, text=True, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def table_rows(out):
    """A rich table's column names and rows, each cell's folded lines joined by a space."""
    lines = [line.strip() for line in out.splitlines()]
    header = next(line for line in lines if line.startswith("┃"))
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0]:  # the rank: a row's first line
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return [name.strip() for name in header.strip("┃").split("┃")], rows


@pytest.fixture(scope="module")
def demo_env(exported_model, tmp_path_factory):
    """The first 200 demo products ingested through the CLI into an Edge directory."""
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("cli")
    catalog = tmp / "demo.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 200), catalog, row_group_size=64)
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp / "data")}
    proc = run_cli(
        "ingest", str(catalog), "--json", "--rejects", str(tmp / "rej.jsonl"), env_extra=env
    )
    report = json.loads(proc.stdout)
    assert report["read"] == report["upserted"] + report["rejected"] == 200
    assert report["points_in_collection"] == 200
    return env, tmp


def test_query_prints_a_table(demo_env):
    env, _ = demo_env
    out = run_cli("query", "women's casual shoes", env_extra=env).stdout
    assert "women's casual shoes" in out and "score" in out and "INR" in out


def test_a_column_no_shown_product_fills_is_left_out():
    from rich.console import Console

    from shopsearch.cli.render import results_table
    from shopsearch.store.backend import Hit, SearchMode

    def columns(hits):
        console = Console(width=120, record=True)
        console.print(results_table("q", "q", hits, SearchMode.HYBRID))
        header = next(line for line in console.export_text().splitlines() if "title" in line)
        return [word for word in header.split() if word.isalpha()]

    shoes = {"title": "casual shoes", "price": 499.0, "currency": "INR", "category": ["shoes"]}
    assert columns([Hit("1", 0.9, shoes)]) == ["title", "price", "category", "score"]
    clogs = {"title": "clogs", "brand": "swagga"}
    assert columns([Hit("1", 0.9, shoes), Hit("2", 0.8, clogs)]) == [
        "title",
        "brand",
        "price",
        "category",
        "score",
    ]
    assert columns([Hit("1", 0.9, {"title": "clogs"})]) == ["title", "score"]
    assert "brand" in columns([])  # an empty result keeps the full header


def test_variants_that_would_read_alike_show_their_color_size_or_product_id():
    """--all-variants lists the sizes and colours of one item under one title: without color
    and size columns (and the id where those do not differ) the rows read the same."""
    from rich.console import Console

    from shopsearch.cli.render import results_table
    from shopsearch.store.backend import Hit, SearchMode

    def table(payloads):
        hits = [Hit(str(n), 1 - n / 10, p) for n, p in enumerate(payloads)]
        console = Console(width=100, record=True)
        console.print(results_table("q", "q", hits, SearchMode.HYBRID))
        return table_rows(console.export_text())

    boot = {"title": "leather boots", "price": 999.0, "currency": "INR", "parent_id": "boot"}
    variants = [
        {**boot, "product_id": f"boot-{color}-{size}", "color": color, "size": size}
        for color in ("Black", "Brown")
        for size in ("7", "8")
    ]
    names, rows = table(variants)
    assert names == ["#", "title", "color", "size", "price", "score"]
    assert [row[2:4] for row in rows] == [
        ["Black", "7"],
        ["Black", "8"],
        ["Brown", "7"],
        ["Brown", "8"],
    ]

    # Variants differing only in what the table leaves out: the product id tells them apart.
    packs = [{**boot, "product_id": f"boot-pack-{n}", "attributes": {"pack": n}} for n in "12"]
    names, rows = table([*packs, {**boot, "title": "canvas boots", "product_id": "canvas"}])
    assert names == ["#", "title", "id", "price", "score"]
    assert [row[2] for row in rows] == ["boot-pack-1", "boot-pack-2", "canvas"]
    names, _ = table([packs[0], {**boot, "title": "canvas boots", "product_id": "canvas"}])
    assert "id" not in names  # rows that differ need no id


def test_markup_in_queries_and_catalog_values_is_shown_as_typed():
    """rich reads `[...]` as markup: unescaped, `[/]` crashed the table and `[bold]` vanished."""
    from rich.console import Console

    from shopsearch.cli.render import results_table
    from shopsearch.store.backend import Hit, SearchMode

    payload = {
        "title": "[b]cable",
        "brand": "Acme [/b]",
        "category": ["electronics", "hdmi [pack of 2]"],
        "price": 3.0,
        "currency": "[u]",
        "color": "[i]red",
        "size": "XL [/i]",
    }
    # Two variants that read alike: the product ids tell them apart, as typed too.
    hits = [Hit(str(n), 0.5, {**payload, "product_id": f"[s]{n}"}) for n in (1, 2)]
    console = Console(width=200, record=True)
    console.print(results_table("shoes [/]", "[bold red]shoes", hits, SearchMode.HYBRID))
    out = console.export_text()
    for shown in ("'[bold red]shoes'", "'shoes [/]'", "[b]cable", "Acme [/b]", "3.00 [u]"):
        assert shown in out
    for shown in ("[i]red", "XL [/i]", "[s]1", "[s]2"):
        assert shown in out
    assert "electronics > hdmi [pack of 2]" in out


def test_a_query_with_markup_runs(demo_env):
    env, _ = demo_env
    proc = run_cli("query", "shoes [/]", env_extra={**env, "COLUMNS": "200"})
    assert "'shoes [/]' (hybrid)" in proc.stdout and "Traceback" not in proc.stderr


def test_a_misspelled_query_is_corrected_and_the_output_says_so(demo_env):
    env, _ = demo_env
    typed = "womens casul shoes"
    doc = json.loads(run_cli("query", typed, "--json", env_extra=env).stdout)
    assert doc["query"] == typed and doc["searched"] == "womens casual shoes"
    assert doc["results"]
    out = run_cli("query", typed, env_extra={**env, "COLUMNS": "200"}).stdout
    assert "showing results for 'womens casual shoes': --no-fix-typos searches" in out
    kept = run_cli("query", typed, "--no-fix-typos", "--json", env_extra=env).stdout
    assert json.loads(kept)["searched"] == typed


def test_query_json_applies_filters(demo_env):
    env, _ = demo_env
    proc = run_cli(
        "query",
        "shoes",
        "--filter",
        "price<=500",
        "-f",
        "category=footwear",
        "--json",
        "--top-k",
        "5",
        env_extra=env,
    )
    doc = json.loads(proc.stdout)
    assert doc["mode"] == "hybrid" and doc["filters"] == ["price<=500", "category=footwear"]
    assert doc["fusion"] == "adaptive" and doc["bm25_weight"] is None
    assert 0 < len(doc["results"]) <= 5
    for hit in doc["results"]:
        assert hit["price"] <= 500 and "footwear" in hit["category"]
        assert isinstance(hit["score"], float) and hit["product_id"]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("pricee<=150", "unknown field 'pricee'"),
        ("price<=cheap", "'cheap' is not a number"),
        ("brand", "expected FIELD=VALUE"),
    ],
)
def test_bad_filter_exits_nonzero_naming_it(demo_env, expr, message):
    env, _ = demo_env
    proc = run_cli("query", "shoes", "--filter", expr, env_extra=env, check=False)
    assert proc.returncode == 2
    assert f"bad --filter {expr!r}" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("command", ["query", "info", "facets"])
def test_an_unreachable_server_exits_1_naming_its_url(command, closed_port):
    for url in (
        f"http://127.0.0.1:{closed_port}",
        f"127.0.0.1:{closed_port}",
    ):  # with and without a scheme
        args = {"query": ["shoes"], "facets": ["brand"]}.get(command, [])
        proc = run_cli(command, *args, "--qdrant-url", url, check=False)
        assert proc.returncode == 1
        assert f"cannot reach Qdrant at {url} " in proc.stderr
        assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bm25-weight", "inf"], "--bm25-weight must be a finite number above 0 (got inf)"),
        (["--bm25-weight", "nan"], "--bm25-weight must be a finite number above 0 (got nan)"),
        (["--mode", "dense", "--bm25-weight", "2"], "--bm25-weight weighs a hybrid search's lists"),
    ],
)
def test_an_unusable_bm25_weight_exits_2_before_any_output(flags, message):
    proc = run_cli("query", "shoes", *flags, "--json", check=False)
    assert proc.returncode == 2 and message in proc.stderr and proc.stdout == ""


def test_json_output_is_strict_json(capsys):
    from shopsearch.cli.output import print_json

    print_json({"ndcg": float("nan"), "loss": [float("inf"), 1.5], "name": "é"})
    strict = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert strict == {"ndcg": None, "loss": [None, 1.5], "name": "é"}


def test_an_offset_shows_the_next_page_numbered_on(demo_env):
    env, tmp = demo_env

    def ids(*args):
        doc = json.loads(run_cli("query", "ankle boots", "--json", *args, env_extra=env).stdout)
        return doc["offset"], [r["product_id"] for r in doc["results"]]

    assert ids("-k", "3", "--offset", "2") == (2, ids("-k", "5")[1][2:])
    table = run_cli("query", "ankle boots", "-k", "3", "--offset", "2", env_extra=env).stdout
    assert "— results 3-5" in table
    assert [row[0] for row in table_rows(table)[1]] == ["3", "4", "5"]
    past = run_cli("query", "ankle boots", "--offset", "5000", env_extra=env).stdout
    assert "0 results" in past and "no results past the first 5000" in past
    batch = tmp / "one.jsonl"
    batch.write_text('{"query_id": "q", "query": "boots"}\n', encoding="utf-8")
    proc = run_cli("query", "--batch", str(batch), "--offset", "10", env_extra=env, check=False)
    assert proc.returncode == 2 and "--batch writes whole rankings" in proc.stderr


def test_batch_mode_writes_the_run_format(demo_env):
    env, tmp = demo_env
    batch = tmp / "queries.jsonl"
    batch.write_text(
        '{"query_id": "q1", "query": "women\'s casual shoes"}\n'
        '{"query_id": 7, "query": "ring", "filters": ["price>=1000"]}\n',
        encoding="utf-8",
    )
    out = tmp / "run.jsonl"
    run_cli("query", "--batch", str(batch), "--out", str(out), "--top-k", "3", env_extra=env)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["query_id"] for x in lines] == ["q1", "7"]
    for line in lines:
        assert len(line["results"]) == 3
        assert set(line["results"][0]) == {"product_id", "score"}


def test_a_batch_file_with_a_bom_and_null_ids_runs(demo_env):
    env, tmp = demo_env
    batch = tmp / "bom.jsonl"
    lines = (
        '{"query_id": null, "query": "ring"}\n{"query": "shoes"}\n{"query_id": 0, "query": "x"}\n'
    )
    batch.write_text(lines, encoding="utf-8-sig")  # starts with a byte-order mark
    out = run_cli("query", "--batch", str(batch), "--top-k", "1", env_extra=env).stdout
    assert [json.loads(x)["query_id"] for x in out.splitlines()] == ["1", "2", "0"]


def test_bad_batch_line_is_named(demo_env):
    env, tmp = demo_env
    batch = tmp / "bad.jsonl"
    batch.write_text('{"query": "ok"}\n{"query": "x", "filters": ["colour=red"]}\n')
    proc = run_cli("query", "--batch", str(batch), env_extra=env, check=False)
    assert proc.returncode == 2
    assert "bad.jsonl line 2" in proc.stderr and "unknown field 'colour'" in proc.stderr


def test_query_path_never_imports_torch(demo_env):
    env, _ = demo_env
    code = textwrap.dedent(
        """
        import sys
        from shopsearch.cli.app import main
        assert main(["query", "women's casual shoes", "--json"]) == 0
        heavy = [m for m in ("torch", "transformers", "sentence_transformers", "optimum")
                 if m in sys.modules]
        assert not heavy, heavy
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"]


def test_ingest_prune_reports_what_it_deleted_or_why_it_did_not(demo_env, tmp_path):
    env, _ = demo_env

    def ingest(*rows):
        catalog = tmp_path / "shop.jsonl"
        catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        args = ("ingest", str(catalog), "-c", "sync", "--prune", "--rejects", str(tmp_path / "r"))
        return run_cli(*args, env_extra=env)

    ingest({"id": "a", "title": "Cordless drill"}, {"id": "b", "title": "Garden hose"})
    _forget_variants(Path(env["SHOPSEARCH_DATA_DIR"]) / "sync")  # as ingested before the record
    assert "variants: not recorded" in run_cli("info", "-c", "sync", env_extra=env).stdout
    proc = ingest({"id": "a", "title": "Cordless drill"})
    assert "pruned 1 products the catalog no longer lists" in proc.stdout
    assert "variants: no" in run_cli("info", "-c", "sync", env_extra=env).stdout
    assert "1 of them already stored as they are: not encoded again" in proc.stdout
    assert "sync: 1 products" in proc.stdout
    proc = ingest({"id": "a", "title": "Cordless drill"}, {"title": "no id"})
    assert proc.returncode == 0 and "pruned" not in proc.stdout
    assert "warning: nothing pruned: row 2 has no product id" in proc.stderr


def _forget_variants(directory):
    from dataclasses import replace

    from shopsearch.store.documents import read_meta, write_meta
    from shopsearch.store.edge import EdgeBackend

    backend = EdgeBackend(directory)
    write_meta(backend, replace(read_meta(backend), variants=None))
    backend.close()


def test_a_rejects_path_that_is_the_catalog_or_unwritable_is_refused_before_any_work(
    demo_env, tmp_path
):
    env, _ = demo_env
    catalog = tmp_path / "victim.csv"
    catalog.write_text("id,title,price\nV1,Disk drive,50\nV2,Desk,cheap\n", encoding="utf-8")
    (tmp_path / "link.csv").symlink_to(catalog)
    (tmp_path / "somedir").mkdir()
    refused = {
        catalog: "is the catalog itself",
        tmp_path / "link.csv": "is the catalog itself",
        tmp_path / "somedir": "is a directory",
        catalog / "rejects.jsonl": f"cannot be written: {catalog} is not a writable directory",
    }
    for rejects, reason in refused.items():
        args = ("ingest", str(catalog), "-c", "refused", "--rejects", str(rejects))
        proc = run_cli(*args, env_extra=env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert f"error: --rejects {rejects} {reason}" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert catalog.read_text(encoding="utf-8").endswith("V2,Desk,cheap\n")
    assert run_cli("info", "-c", "refused", env_extra=env, check=False).returncode == 1


def test_bad_bm25_flag_exits_2_naming_it_and_creates_nothing(demo_env, tmp_path):
    env, _ = demo_env
    proc = run_cli("ingest", str(DEMO), "--bm25-k", "-1", "-c", "bad", env_extra=env, check=False)
    assert proc.returncode == 2 and "--bm25-k must be at least 0 (got -1.0)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("info", "-c", "bad", "--json", env_extra=env, check=False)
    assert proc.returncode == 1  # no collection was created


def test_missing_collection_and_model_are_clear_errors(demo_env, tmp_path):
    env, _ = demo_env
    proc = run_cli("query", "x", "--collection", "nope", env_extra=env, check=False)
    assert proc.returncode == 1 and "run `shopsearch ingest CATALOG` first" in proc.stderr
    proc = run_cli("query", "x", "--model", str(tmp_path), env_extra=env, check=False)
    assert proc.returncode == 1 and "shopsearch model export" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_broken_model_file_is_a_clear_error(demo_env, exported_model, tmp_path):
    """The query encoder's child fails; the CLI still reports the in-process error, once."""
    import hashlib
    import shutil

    env, _ = demo_env
    broken = tmp_path / "model"
    shutil.copytree(exported_model, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / manifest["files"]["int8"]).write_bytes(b"not an onnx graph")
    # Pinned in the manifest, so the file passes the sha256 check and onnxruntime refuses it.
    manifest["sha256"][manifest["files"]["int8"]] = hashlib.sha256(b"not an onnx graph").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("query", "x", "--model", str(broken), env_extra=env, check=False)
    assert proc.returncode == 1 and proc.stderr.count("onnxruntime cannot load") == 1
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_info_reports_the_encoder_and_vocabulary(demo_env):
    env, _ = demo_env
    doc = json.loads(run_cli("info", "--json", env_extra=env).stdout)
    assert doc["products"] == 200
    assert doc["encoder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert doc["encoder"]["dimension"] == 384
    assert doc["vocabulary_words"] > 100  # the catalog's words, for typo tolerance
    assert doc["variants"] is False  # the demo catalog has no parent_id
    assert "variants: no" in run_cli("info", env_extra=env).stdout


def test_variants_of_one_product_are_one_result_unless_all_are_asked_for(demo_env, tmp_path):
    env, _ = demo_env
    sizes = ("6", "7", "8")
    rows = [
        {"id": f"drill-{v}", "title": f"Cordless drill, {v} V", "size": v, "parent_id": "drill"}
        for v in sizes
    ] + [{"id": "hose", "title": "Garden hose"}]
    catalog = tmp_path / "shop.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    where = ("-c", "variants")
    run_cli("ingest", str(catalog), *where, "--rejects", str(tmp_path / "r"), env_extra=env)

    doc = json.loads(run_cli("query", "drill", *where, "--json", env_extra=env).stdout)
    first, second = doc["results"]
    assert first["parent_id"] == "drill" and second["product_id"] == "hose"
    assert sorted([first["product_id"], *first["other_variants"]]) == [
        "drill-6",
        "drill-7",
        "drill-8",
    ]
    assert second["other_variants"] == []
    every = run_cli("query", "drill", *where, "--all-variants", "--json", env_extra=env).stdout
    assert len(json.loads(every)["results"]) == 4
    table = run_cli("query", "drill", *where, env_extra={**env, "COLUMNS": "200"}).stdout
    assert "(+2 variants)" in table
    assert "variants: yes" in run_cli("info", *where, env_extra=env).stdout


def test_all_variants_are_told_apart_in_the_table_and_the_json(demo_env, variant_catalog):
    """The 320-product catalog (40 shoes in six sizes each) through the CLI: every variant
    row shows its size, and --json gives what a service needs to regroup them."""
    env, tmp = demo_env
    where = ("-c", "sizes", "--all-variants", "--top-k", "12")
    run_cli(
        "ingest", str(variant_catalog), "-c", "sizes", "--rejects", str(tmp / "r"), env_extra=env
    )

    results = json.loads(
        run_cli("query", "women's casual shoes", *where, "--json", env_extra=env).stdout
    )["results"]
    variants = [r for r in results if "parent_id" in r]
    assert len(results) == 12 and len(variants) >= 6
    assert len({r["parent_id"] for r in variants}) < len(variants)  # sizes: results of their own
    for result in variants:
        assert result["product_id"] == f"{result['parent_id']}-{result['size']}"
        assert result["color"] and result["other_variants"] == []

    out = run_cli("query", "women's casual shoes", *where, env_extra={**env, "COLUMNS": "100"})
    names, rows = table_rows(out.stdout)
    assert {"color", "size"} <= set(names) and "id" not in names  # sizes differ: no id needed
    size, color = names.index("size"), names.index("color")
    shown = [(r.get("size", ""), r.get("color", "")) for r in results]
    assert [(row[size], row[color]) for row in rows] == shown
    assert len({tuple(row[1:-1]) for row in rows}) == 12  # no two rows read the same


def test_version_and_short_help_need_no_command():
    from shopsearch import __version__

    assert run_cli("--version").stdout.strip() == f"shopsearch {__version__}"
    assert "Usage: shopsearch query" in run_cli("query", "-h").stdout


def test_export_never_overwrites_the_default_encoder_with_another_model(exported_model):
    other = run_cli("model", "export", "some/other-model", check=False)
    assert other.returncode == 2 and "--out is needed" in other.stderr
    clash = run_cli(
        "model",
        "export",
        "some/other-model",
        "--out",
        str(exported_model),
        "--if-missing",
        check=False,
    )
    assert (
        clash.returncode == 2
        and "already holds sentence-transformers/all-MiniLM-L6-v2" in clash.stderr
    )
    kept = json.loads(
        run_cli("model", "export", "--out", str(exported_model), "--if-missing", "--json").stdout
    )
    assert kept["exported"] is False and len(kept["fingerprint"]) == 64


def test_a_catalog_whose_every_row_is_rejected_is_an_error(demo_env, tmp_path):
    env, _ = demo_env
    catalog = tmp_path / "no-ids.jsonl"
    catalog.write_text('{"product_id": "a", "title": "x"}\n{"product_id": "b", "title": "y"}\n')
    proc = run_cli(
        "ingest",
        str(catalog),
        "-c",
        "noids",
        "--rejects",
        str(tmp_path / "r.jsonl"),
        env_extra=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "read 2 = upserted 0 + rejected 2" in proc.stdout
    assert "no product ingested: all 2 rows were rejected" in proc.stderr


def test_an_ingest_while_another_writes_the_collection_exits_1_and_queries_still_run(demo_env):
    from shopsearch.store.edge import EdgeBackend

    env, tmp = demo_env
    collection = Path(env["SHOPSEARCH_DATA_DIR"]) / "products"
    catalog = tmp / "demo.parquet"  # what the collection holds: a run that got through is a no-op
    args = ("ingest", str(catalog), "-c", "products", "--rejects", str(tmp / "busy.jsonl"))
    with EdgeBackend(collection).writing():  # this test process is the first ingest
        proc = run_cli(*args, "--recreate", env_extra=env, check=False)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.strip() == (
            f"error: collection 'products' at {collection} is being written by another ingest "
            f"(process {os.getpid()}): wait for it to finish (lock file "
            f"{collection.parent / '.products.lock'})"
        )
        assert not collection.with_name(".products.recreating").exists()
        assert json.loads(run_cli("query", "shoes", "--json", env_extra=env).stdout)["results"]
    proc = run_cli(*args, env_extra=env)
    assert "200 of them already stored as they are" in proc.stdout


def test_a_csv_quote_never_closed_exits_1_naming_its_row_before_anything_is_written(
    demo_env, tmp_path
):
    env, _ = demo_env
    rows = [f"R{i},Item {i}" for i in range(1, 1001)]
    rows[9] = 'R10,"Item 10'
    catalog = tmp_path / "shop.csv"
    catalog.write_text("id,title\n" + "\n".join(rows) + "\n", encoding="utf-8")
    args = ("ingest", str(catalog), "-c", "unclosed", "--rejects", str(tmp_path / "r.jsonl"))
    proc = run_cli(*args, env_extra=env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "row 10 (line 11) opens a quote that is never closed: the 990 lines" in proc.stderr
    assert run_cli("info", "-c", "unclosed", env_extra=env, check=False).returncode == 1


def test_facets_count_values_under_the_filters_as_a_table_and_as_json(demo_env):
    import pyarrow.parquet as pq

    env, _ = demo_env
    rows = pq.read_table(DEMO).slice(0, 200).to_pylist()
    black = [r for r in rows if r["color"] == "Black"]
    proc = run_cli("facets", "category", "color", "-f", "color=Black", "--json", env_extra=env)
    doc = json.loads(proc.stdout)
    assert doc["filters"] == ["color=Black"] and doc["products"] == len(black) > 0
    assert doc["facets"]["color"] == [{"value": "Black", "count": len(black)}]
    levels = Counter(level for r in black for level in r["category"] or [])
    top = doc["facets"]["category"]
    value, count = min(levels.items(), key=lambda kv: (-kv[1], kv[0]))
    assert len(top) == 10 and top[0] == {"value": value, "count": count}
    prices = [r["price"] for r in black]
    assert doc["ranges"] == {}
    proc = run_cli("facets", "price", "-f", "color=Black", "--json", env_extra=env)
    assert json.loads(proc.stdout)["ranges"] == {"price": {"min": min(prices), "max": max(prices)}}
    proc = run_cli("facets", "in_stock", "--limit", "1", env_extra=env)
    assert proc.stdout.startswith("200 products\n")
    assert table_rows(proc.stdout) == (["value", "products"], [["true", "200"]])


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("product_id", "every product has its own product_id"),
        ("attributes.Occasion", "has no payload index"),
        ("colour", "unknown field 'colour'"),
    ],
)
def test_a_field_facets_cannot_count_exits_2_naming_the_countable_ones(demo_env, field, message):
    env, _ = demo_env
    proc = run_cli("facets", "brand", field, env_extra=env, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and "countable: brand, category, color" in proc.stderr
    assert "in_stock, price)" in proc.stderr


def test_a_querys_facets_come_with_its_results_and_not_with_a_batch(demo_env, tmp_path):
    env, _ = demo_env
    proc = run_cli(
        "query",
        "boots",
        "--facet",
        "color",
        "--facet-limit",
        "3",
        "--candidates",
        "20",
        "--json",
        env_extra=env,
    )
    doc = json.loads(proc.stdout)
    assert doc["facets_among"] == 20 and len(doc["results"]) == 10
    colors = doc["facets"]["color"]
    assert len(colors) == 3 and colors[0]["count"] >= colors[-1]["count"] > 0
    table = run_cli("query", "boots", "--facet", "brand", env_extra=env).stdout
    assert "facets of the best 100 results" in table
    batch = tmp_path / "q.jsonl"
    batch.write_text('{"query_id": "q", "query": "boots"}\n', encoding="utf-8")
    proc = run_cli("query", "--batch", str(batch), "--facet", "color", env_extra=env, check=False)
    assert proc.returncode == 2 and "--facet counts one query's results" in proc.stderr
