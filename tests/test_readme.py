"""The README's promises: its Python example runs as printed, and its links lead somewhere.

The example (the ```python block under "## Python API") is executed for real: the real
exported model, an embedded collection in a temporary directory, the demo catalog. It must
ingest the whole catalog and print products that pass its filters.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import shopsearch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

FENCE_RE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HIT_RE = re.compile(r"^(?P<id>\S+) (?P<title>.+) (?P<price>\d+(?:\.\d+)?) (?P<score>-?\d+\.\d{3})$")


def python_example(text: str) -> str:
    """The first ```python block after the "## Python API" heading."""
    heading = re.search(r"^## Python API[ \t]*$", text, re.MULTILINE)
    assert heading, "README.md has no '## Python API' section"
    block = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
    found = block.search(text, heading.end())
    next_heading = re.compile(r"^## ", re.MULTILINE).search(text, heading.end())
    assert found and (next_heading is None or found.start() < next_heading.start()), (
        "the Python API section has no ```python block"
    )
    return found.group(1)


def test_python_example_uses_only_the_public_api():
    tree = ast.parse(python_example(README.read_text(encoding="utf-8")))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shopsearch"):
            assert node.module == "shopsearch", f"imports {node.module}, not the public API"
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("shopsearch") for a in node.names)
    assert imported, "the example imports nothing from shopsearch"
    assert set(imported) <= set(shopsearch.__all__), set(imported) - set(shopsearch.__all__)


def test_python_example_runs(
    exported_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """Run from a scratch directory holding `examples/catalog.parquet`, as the repository
    root does, so that the default rejects file lands there and not in the checkout."""
    code = python_example(README.read_text(encoding="utf-8"))
    work, data = tmp_path / "work", tmp_path / "data"
    (work / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "catalog.parquet", work / "examples" / "catalog.parquet")
    monkeypatch.chdir(work)
    monkeypatch.setenv("SHOPSEARCH_MODEL_DIR", str(exported_model))
    monkeypatch.setenv("SHOPSEARCH_DATA_DIR", str(data))
    monkeypatch.delenv("QDRANT_URL", raising=False)

    exec(compile(code, "README.md (Python API)", "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.splitlines()

    rows = pq.read_table(ROOT / "examples" / "catalog.parquet").to_pylist()
    catalog = {row["id"]: row for row in rows}
    assert lines[0] == f"read {len(catalog)} = upserted {len(catalog)} + rejected 0", lines
    hits = [HIT_RE.match(line) for line in lines[1:]]
    assert hits and all(hits), lines
    for hit in hits:
        product = catalog[hit["id"]]  # a real product of the catalog ...
        assert product["title"] == hit["title"]
        assert product["color"] == "Black"  # ... that passes the example's filters
        assert product["price"] == float(hit["price"]) <= 1500
    assert "boots" in hits[0]["title"]  # "black boots for women": the best hit is boots
    scores = [float(hit["score"]) for hit in hits]
    assert scores == sorted(scores, reverse=True)
    # The collection went where SHOPSEARCH_DATA_DIR says; no rejects file (none rejected).
    assert (data / "demo" / "shopsearch.json").is_file()
    assert not list(work.glob("*.rejects.jsonl"))


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_reference_docs_exist():
    for name in ("cli.md", "collection.md", "DESIGN.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE_RE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize(
    "doc",
    [README, *sorted(DOCS.glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_resolve(doc: Path):
    """Every relative link names an existing file, and an anchor in a Markdown file names
    one of its headings. Links inside code blocks are code, not links."""
    text = FENCE_RE.sub("", doc.read_text(encoding="utf-8"))
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading '#{anchor}'")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"
