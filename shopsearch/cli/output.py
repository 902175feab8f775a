"""`--json` output, written the same way by every command."""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def print_json(doc: Any, *, ensure_ascii: bool = True) -> None:
    """Strict JSON on stdout. Python's default writes NaN and Infinity, which JSON has not and
    most parsers reject: a non-finite number (an undefined metric, a diverged loss) is written
    as null instead. Inputs are validated before they get here (`--bm25-weight inf` is a usage
    error), so a null stands for "no number", never for a value the user gave."""
    json.dump(_finite(doc), sys.stdout, indent=2, ensure_ascii=ensure_ascii, allow_nan=False)
    sys.stdout.write("\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
