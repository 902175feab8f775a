"""The contract between `model export` and the torch-free runtime encoder.

An exported directory is usable without sentence-transformers only if everything the runtime
must reproduce (pooling, normalisation, prompts, truncation length) is written down beside the
ONNX files. The manifest also pins every file by sha256, so a corrupted or swapped file is
caught, and derives a `fingerprint` that names the embedding space: collections record it, so
vectors from a different encoder are never mixed in silently.

Every load checks the pinned files (`Manifest.check_files`), and hashing a model on each cold
`shopsearch query` would cost more than the query. So each file is hashed once and its digest
kept in `$XDG_CACHE_HOME/shopsearch/verified.json` (default `~/.cache/...`), keyed by the file's
real path and stat signature (size, mtime, ctime, inode, device); later loads compare only that
signature, and any write to the file changes it, so the file is hashed again. The cache holds
digests, never verdicts: a manifest whose sha256 was altered is caught on a warm cache too. A
cache that cannot be read or written only costs a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePath
from stat import S_ISREG
from typing import Any, Literal

from shopsearch.encoders.resolve import default_model_dir
from shopsearch.errors import ModelIntegrityError, ModelNotFoundError, UsageError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
POOLING_MODES = ("mean", "cls", "max")

Pooling = Literal["mean", "cls", "max"]
Precision = Literal["fp32", "int8"]
# int8 keeps retrieval quality and encodes faster than fp32 (benchmarks/RESULTS.md, the
# int8 section and section 1); fp32 reproduces sentence-transformers.
DEFAULT_PRECISION: Precision = "int8"

_HASH_CHUNK = 1 << 20
# Encoder threads beyond a few per CPU only queue for the same cores while each costs a native
# thread and its stack; the bound keeps a typo (--threads 1000) from stalling the machine.
THREADS_PER_CPU = 4
VERIFIED_CACHE_FILE = "verified.json"
_VERIFIED_CACHE_VERSION = 1
# Files of a few exports and precisions; the oldest entries go first.
_VERIFIED_CACHE_ENTRIES = 64


def check_threads(threads: int | None) -> None:
    """UsageError unless `threads` (None: all CPUs) is between 1 and THREADS_PER_CPU per CPU.

    The encoders' one check, before any session or child process is made."""
    if threads is None:
        return
    cpus = os.cpu_count() or 1
    limit = THREADS_PER_CPU * cpus
    if not 1 <= threads <= limit:
        raise UsageError(
            f"threads must be between 1 and {limit} ({THREADS_PER_CPU} per CPU, {cpus} CPUs "
            f"here), not {threads}"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large ONNX files never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs to turn text into the exported model's embeddings.

    `files` maps a precision ("fp32", "int8") to its ONNX file and `sha256` maps every file the
    runtime reads (relative path) to its digest. `directory` is where the manifest was loaded
    from or written to; it is not serialised.
    """

    model_name: str
    dimension: int
    max_seq_length: int
    pooling: Pooling
    normalize: bool
    query_prefix: str
    document_prefix: str
    tokenizer: str
    files: Mapping[str, str]
    sha256: Mapping[str, str]
    quantization_config: str | None = None
    format_version: int = FORMAT_VERSION
    directory: Path | None = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space; the fp32 and int8 files of one export share it."""
        identity = {
            "fp32_sha256": self.sha256[self.files["fp32"]],
            "tokenizer_sha256": self.sha256[self.tokenizer],
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "max_seq_length": self.max_seq_length,
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the manifest."""
        if self.directory is None:
            raise ModelNotFoundError("this manifest was not loaded from a model directory")
        return self.directory / relative

    def model_file(self, precision: Precision) -> Path:
        """The ONNX file for a precision, or ModelNotFoundError when the export lacks it."""
        relative = self.files.get(precision)
        if relative is None:
            available = ", ".join(self.files) or "none"
            raise ModelNotFoundError(
                f"the model in {self.directory} has no {precision} file (available: {available}); "
                "use --precision with one of those, or re-run `shopsearch model export` with "
                "quantisation enabled"
            )
        return self.path(relative)

    def verify(self, files: Iterable[str] | None = None) -> None:
        """Re-hash `files` (default: all recorded) and compare with the manifest;
        ModelIntegrityError on a mismatch. The digests refresh the verified-files cache."""
        self._check_digests(files, DigestCache.open(), rehash=True)

    def check_files(self, files: Iterable[str] | None = None) -> None:
        """`verify`, but a file whose stat signature the verified-files cache has seen is not
        re-hashed: cheap enough for every load."""
        self._check_digests(files, DigestCache.open(), rehash=False)

    def _check_digests(self, files: Iterable[str] | None, cache: DigestCache, rehash: bool) -> None:
        try:
            for relative in self.sha256 if files is None else files:
                expected = self.sha256.get(relative)
                if expected is None:
                    raise ModelIntegrityError(
                        f"{relative} has no sha256 in {self._manifest_path()}"
                    )
                target = self.path(relative)
                try:
                    stat = target.stat()
                except OSError:
                    stat = None
                if stat is None or not S_ISREG(stat.st_mode):
                    raise ModelIntegrityError(
                        f"{target} is missing but listed in {self._manifest_path()}; "
                        "re-export the model"
                    )
                actual = None if rehash else cache.digest(target, stat)
                if actual is None:
                    try:
                        actual = sha256_file(target)
                    except OSError as exc:
                        raise ModelIntegrityError(f"cannot read {target}: {exc}") from exc
                    cache.record(target, stat, actual)
                if actual != expected:
                    raise ModelIntegrityError(
                        f"{target} is corrupted or was replaced: its sha256 {actual} does not "
                        f"match {expected} in {self._manifest_path()}; re-export the model "
                        "(`shopsearch model export`)"
                    )
        finally:
            cache.save()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["directory"]
        data["files"] = dict(self.files)
        data["sha256"] = dict(sorted(self.sha256.items()))
        return data

    def write(self, directory: Path) -> Manifest:
        """Write `manifest.json` into `directory`; returns the manifest bound to it."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")
        return replace(self, directory=directory)

    @classmethod
    def load(cls, directory: Path | None = None) -> Manifest:
        """Read `manifest.json` from `directory` (default: `default_model_dir()`);
        ModelNotFoundError when there is no export there."""
        directory = Path(directory) if directory is not None else default_model_dir()
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ModelNotFoundError(
                f"no exported model at {directory}; run `shopsearch model export` "
                "(or point SHOPSEARCH_MODEL_DIR at an exported model)"
            )
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
            raise ModelIntegrityError(f"cannot read {manifest_path}: {exc}") from exc
        except RecursionError:  # JSON nested deeper than the parser recurses
            raise ModelIntegrityError(
                f"cannot read {manifest_path}: JSON nested too deeply; re-export the model"
            ) from None
        return cls.from_dict(data, directory=directory, source=manifest_path)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], directory: Path | None = None, source: Path | None = None
    ) -> Manifest:
        """The manifest `data` describes, every field's type and shape checked first: a
        manifest is read from disk, where anything may have been written, and a field of the
        wrong type would otherwise surface far from here (a string dimension in numpy, a
        path outside the export opened as a model file)."""
        where = source or "the manifest"
        if not isinstance(data, Mapping):
            raise ModelIntegrityError(f"{where} is not a JSON object")
        version = data.get("format_version")
        if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
            raise ModelIntegrityError(
                f"{where} has format_version {_shown(version)}; this shopsearch reads up to "
                f"{FORMAT_VERSION}: upgrade shopsearch or re-export the model"
            )
        names = {f.name for f in fields(cls)} - {"directory"}
        missing = sorted(n for n in names if n not in data and n != "quantization_config")
        if missing:
            raise ModelIntegrityError(f"{where} is missing {', '.join(missing)}")
        for name, (fits, wanted) in _FIELD_RULES.items():
            if name in data and not fits(data[name]):
                raise ModelIntegrityError(
                    f"{where}: {name} must be {wanted}, not {_shown(data[name])}; re-export "
                    "the model (`shopsearch model export`)"
                )
        manifest = cls(**{k: v for k, v in data.items() if k in names}, directory=directory)
        manifest._check(where)
        return manifest

    def _check(self, where: object) -> None:
        """What no one field shows: the fp32 model is listed, and every file read is pinned."""
        if "fp32" not in self.files:
            raise ModelIntegrityError(f"{where}: no fp32 model listed under files")
        unpinned = [f for f in (self.tokenizer, *self.files.values()) if f not in self.sha256]
        if unpinned:
            raise ModelIntegrityError(f"{where}: no sha256 for {', '.join(unpinned)}")

    def _manifest_path(self) -> Path | str:
        return self.directory / MANIFEST_FILE if self.directory else MANIFEST_FILE


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no number


def _is_file_name(value: object) -> bool:
    """A path relative to the export that stays inside it: the runtime opens and hashes
    the files the manifest names, and must never reach beyond the model directory."""
    if not isinstance(value, str) or not value or "\0" in value:
        return False
    path = PurePath(value)
    return not path.is_absolute() and ".." not in path.parts


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in _HEX for c in value)


def _maps(
    value: object, key_fits: Callable[[object], bool], fits: Callable[[object], bool]
) -> bool:
    return isinstance(value, Mapping) and all(key_fits(k) and fits(v) for k, v in value.items())


def _shown(value: object) -> str:
    """A value as the manifest's JSON spells it, cut short: a damaged manifest may hold
    megabytes."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # not from JSON: a caller's own value
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HEX = frozenset("0123456789abcdef")
# Each field of the manifest: whether a value fits, and what fits, for the message.
_FIELD_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "model_name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "dimension": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "max_seq_length": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "pooling": (lambda v: v in POOLING_MODES, f"one of {', '.join(POOLING_MODES)}"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    "query_prefix": (lambda v: isinstance(v, str), "a string"),
    "document_prefix": (lambda v: isinstance(v, str), "a string"),
    "tokenizer": (_is_file_name, "a file name inside the model directory"),
    "files": (
        lambda v: _maps(v, lambda k: isinstance(k, str), _is_file_name),
        "an object mapping precisions to file names inside the model directory",
    ),
    "sha256": (
        lambda v: _maps(v, _is_file_name, _is_sha256),
        "an object mapping file names inside the model directory to hex sha256 digests",
    ),
    "quantization_config": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def verified_cache_path() -> Path | None:
    """Where digests of verified model files are kept: the XDG cache (None without a home)."""
    cache_home = os.environ.get("XDG_CACHE_HOME")  # the XDG spec: empty counts as unset
    try:
        root = Path(cache_home) if cache_home else Path.home() / ".cache"
    except RuntimeError:  # no home directory to expand
        return None
    return root / "shopsearch" / VERIFIED_CACHE_FILE


class DigestCache:
    """sha256 digests of model files, keyed by real path, valid while the stat signature holds.

    The signature includes ctime, which no user call can set back, so restoring a changed file's
    mtime does not make its old digest valid again. The file is rewritten whole through a
    rename, so concurrent processes never read half of it; the last writer wins, and a lost
    entry only costs a re-hash.
    """

    def __init__(self, path: Path | None, entries: dict[str, dict[str, Any]]) -> None:
        self._path = path
        self._entries = entries
        self._changed = False

    @classmethod
    def open(cls, path: Path | None = None) -> DigestCache:
        path = path or verified_cache_path()
        entries: dict[str, dict[str, Any]] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") == _VERIFIED_CACHE_VERSION:
                    entries = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
            except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
                entries = {}
        return cls(path, entries)

    @staticmethod
    def _key(target: Path) -> str:
        return os.path.realpath(target)

    @staticmethod
    def _signature(stat: os.stat_result) -> list[int]:
        return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]

    def digest(self, target: Path, stat: os.stat_result) -> str | None:
        """The digest recorded for `target` while it had this stat signature, else None."""
        entry = self._entries.get(self._key(target))
        if entry is None or entry.get("stat") != self._signature(stat):
            return None
        digest = entry.get("sha256")
        return digest if isinstance(digest, str) else None

    def record(self, target: Path, stat: os.stat_result, digest: str) -> None:
        key = self._key(target)
        self._entries.pop(key, None)  # re-inserted last: the newest entry
        self._entries[key] = {"stat": self._signature(stat), "sha256": digest}
        self._changed = True

    def save(self) -> None:
        """Write the cache if anything was recorded; a cache that cannot be written is skipped."""
        if not self._changed or self._path is None:
            return
        self._changed = False
        kept = dict(list(self._entries.items())[-_VERIFIED_CACHE_ENTRIES:])
        text = json.dumps({"version": _VERIFIED_CACHE_VERSION, "files": kept}, indent=1)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{self._path.name}.", dir=self._path.parent
            )
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(temporary, self._path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            pass


class ManifestIdentity:
    """`name`, `dimension` and `fingerprint` of an encoder, read from its export's manifest, so
    that every encoder of one export (in-process or forked) names the same embedding space."""

    _manifest: Manifest

    @property
    def name(self) -> str:
        return self._manifest.model_name

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    @property
    def fingerprint(self) -> str:
        return self._manifest.fingerprint
