"""Access to the compiled extension reversalkit._C, with a pure-Python fallback.

`native()` returns the extension module, or None (after one warning) when it is not built. Callers
pick their pure-Python mirror in that case; results are identical, only slower.
"""

from __future__ import annotations

import functools
import warnings


@functools.lru_cache(maxsize=1)
def native():
    try:
        from reversalkit import _C  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        warnings.warn(
            f"reversalkit._C is not built ({exc}); using the pure-Python fallback, which is slower. "
            "Reinstall with `pip install -e .` (needs a C++17 compiler) to build it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _C


def has_native() -> bool:
    return native() is not None
