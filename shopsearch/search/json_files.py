"""The JSON files a shop writes to control its search (merchandising rules, synonyms), read
once in one way: whatever goes wrong, an `InputFileError` naming the file and where, never a
traceback from the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopsearch.errors import InputFileError


def read_json_file(path: Path) -> Any:
    """`path`'s JSON (a UTF-8 BOM allowed, as editors on Windows write one)."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path.name}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise InputFileError(f"{path.name}: JSON nested too deeply") from None
