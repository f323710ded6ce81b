"""Figures as files: PNG and SVG, written atomically. matplotlib is the optional `plots`
extra; without it `available()` is False and the callers say the figures were skipped."""
from __future__ import annotations

from pathlib import Path

from ..formats.files import atomic_open


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def pyplot():
    """matplotlib.pyplot on the Agg backend (no screen needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out: Path, name: str) -> list[str]:
    """Write `fig` as out/NAME.png and out/NAME.svg (atomically), close it, and return the
    file names."""
    names = []
    for ext in ("png", "svg"):
        path = Path(out) / f"{name}.{ext}"
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format=ext, dpi=130, bbox_inches="tight")
        names.append(path.name)
    pyplot().close(fig)
    return names
