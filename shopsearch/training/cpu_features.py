"""What this CPU's instruction set offers, for choices that pay off only with it.

int8 export picks its quantisation kernels by it (VNNI), and training turns on bf16 autocast
where the CPU has bf16 matrix units. Read from /proc/cpuinfo, so no torch or onnxruntime
import is needed to ask; elsewhere (macOS, Windows) the answer is "nothing known".
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, ARM `Features`)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_bf16_units() -> bool:
    """True where bf16 matrix products run in hardware (Intel AMX, AVX512-BF16)."""
    return bool(BF16_FLAGS & cpu_flags())
