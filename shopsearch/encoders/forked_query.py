"""Encode a one-shot process's queries in a forked child while the parent opens the collection.

Cold `shopsearch query` is two independent, mostly single-threaded waits: loading the encoder
(importing onnxruntime, building the session) and loading the Edge shard (payload index
rebuild, WAL replay). Run one after the other they sum; run side by side on two cores they
overlap (benchmarks/RESULTS.md, section 4). A thread cannot overlap them, because
`EdgeShard.load` holds the GIL throughout, so the encoder runs in a child made with `fork` (no
re-import of the interpreter, unlike `spawn`) and sends back only the vectors.

The child is only an accelerator. The parent never imports onnxruntime unless it must: name,
dimension and fingerprint come from the manifest, and anything the child could not deliver
(a failure there, other texts, document encoding) is done by a normal in-process `OnnxEncoder`,
which raises the usual typed errors. Forking happens only on Linux, only while no other Python
thread runs and before onnxruntime is loaded here (its thread pools are not fork-aware); the
native pool that numpy's import starts (OpenBLAS) is idle and resets itself in the child through
its fork handler, as under multiprocessing's `fork` start method. Otherwise everything is
in-process from the start.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shopsearch.encoders.manifest import Manifest, ManifestIdentity, Precision, check_threads

if TYPE_CHECKING:
    from shopsearch.encoders.onnx_encoder import OnnxEncoder

# The parent loads the shard on one core meanwhile, so the child takes the other; a second
# thread in the child is no faster (benchmarks/RESULTS.md, section 4).
_CHILD_THREADS = 1
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ForkedQueryEncoder(ManifestIdentity):
    """A `TextEncoder` whose first `encode_queries(texts)` was started when it was built.

    Build it with `ForkedQueryEncoder.start(...)`, do other work, then call `encode_queries`
    with the same texts to collect the child's vectors. `close()` (or the context manager)
    stops a child whose result is no longer wanted.
    """

    def __init__(
        self,
        manifest: Manifest,
        precision: Precision,
        threads: int | None,
        texts: Sequence[str],
    ) -> None:
        self._manifest = manifest
        self._precision = precision
        self._threads = threads
        self._texts = list(texts)
        # (pid, read end of the pipe, the finalizer that stops the child if never collected)
        self._child: tuple[int, int, weakref.finalize] | None = None
        self._forked = False
        self._local: OnnxEncoder | None = None

    @classmethod
    def start(
        cls,
        model_dir: Path | None,
        queries: Sequence[str],
        precision: Precision = "int8",
        threads: int | None = None,
    ) -> ForkedQueryEncoder:
        """Check the export is there and `threads` is sane (fast, in-process), then start
        encoding `queries`. The child loads the model as `OnnxEncoder.load` does, checking its
        files against the manifest's sha256; a damaged file fails the child, and the in-process
        encoder that takes over raises the ModelIntegrityError."""
        check_threads(threads)
        manifest = Manifest.load(model_dir)
        manifest.model_file(precision)  # a missing precision fails here, before any fork
        encoder = cls(manifest, precision, threads, queries)
        if can_fork():
            encoder._fork()
        return encoder

    @property
    def forked(self) -> bool:
        """Whether a child is encoding (or has encoded) the queries given to `start`."""
        return self._forked

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if self._child is not None and list(texts) == self._texts:
            vectors = self._collect()
            if vectors is not None:
                return vectors
        return self._in_process().encode_queries(texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._in_process().encode_documents(texts)

    def close(self) -> None:
        """Stop and reap a child whose result was not collected (also done at garbage collection
        and at a normal interpreter exit; after `os._exit` the kernel ends it, see `_end_with`)."""
        if self._child is not None:
            stop = self._child[2]
            self._child = None
            stop()

    def __enter__(self) -> ForkedQueryEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fork(self) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        with warnings.catch_warnings():
            # Python 3.12+ warns of any native thread; can_fork() vetted the ones that matter.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: encode, send, and leave without running the parent's cleanup
            os.close(read_end)
            status = 1
            try:
                _end_with(parent)
                from shopsearch.encoders.onnx_encoder import OnnxEncoder

                encoder = OnnxEncoder.load(
                    self._manifest.directory,
                    precision=self._precision,
                    threads=self._threads or _CHILD_THREADS,
                    verify=True,
                )
                with os.fdopen(write_end, "wb") as pipe:
                    pickle.dump(encoder.encode_queries(self._texts), pipe)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self._child = (pid, read_end, weakref.finalize(self, _stop, pid, read_end))
        self._forked = True

    def _collect(self) -> np.ndarray | None:
        """The child's vectors, or None when it failed (the in-process path then says why)."""
        assert self._child is not None
        pid, read_end, stop = self._child
        self._child = None
        stop.detach()
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        return pickle.loads(payload) if status == 0 else None

    def _in_process(self) -> OnnxEncoder:
        if self._local is None:
            from shopsearch.encoders.onnx_encoder import OnnxEncoder

            self._local = OnnxEncoder.load(
                self._manifest.directory, precision=self._precision, threads=self._threads
            )
        return self._local

    def __repr__(self) -> str:
        return (
            f"ForkedQueryEncoder({self.name!r}, precision={self._precision!r}, "
            f"forked={self.forked})"
        )


def _end_with(parent: int) -> None:
    """Have the kernel kill this child when its parent ends, however it ends: a CLI that fails
    before searching leaves through `os._exit`, which runs no finalizer (Linux's
    PR_SET_PDEATHSIG; the fork happens only on Linux)."""
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)


def _stop(pid: int, read_end: int) -> None:
    os.close(read_end)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def can_fork() -> bool:
    """True on Linux while no other Python thread runs and onnxruntime is not loaded yet."""
    return (
        sys.platform.startswith("linux")
        and threading.active_count() == 1
        and "onnxruntime" not in sys.modules
    )
