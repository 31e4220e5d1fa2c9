"""PNG charts of a benchmark's per-second series (the "series" of its results, see
bench/README.md): one panel per unit (throughput, latency, memory), every series of that unit
as a line over the run's seconds. matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

# Small enough to commit: a figure of a few panels at this size is a few tens of KB.
PANEL_INCHES = (9.0, 2.6)
DPI = 80
LINE_STYLES = ("-", "--", ":", "-.")


def family(name: str) -> str:
    """What a series' name ends with in parentheses ("letters (sqlite)" -> "sqlite"): a family
    keeps one colour in every panel, its series told apart by line style."""
    found = re.search(r"\(([^()]*)\)\s*$", name)
    return found.group(1) if found else ""


def usable_points(entry: Any) -> list[tuple[float, float]]:
    """The [t, value] pairs of a series entry that are numbers; anything else is left out (the
    results come from other processes and may be from older versions of a benchmark)."""
    if not isinstance(entry, Mapping):
        return []
    points = entry.get("points")
    if not isinstance(points, list):
        return []
    usable: list[tuple[float, float]] = []
    for point in points:
        if (
            isinstance(point, list | tuple)
            and len(point) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            and all(math.isfinite(v) for v in point)
        ):
            usable.append((float(point[0]), float(point[1])))
    return usable


def by_unit(series: Mapping[str, Any]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Series grouped by unit, in the order the units first appear; empty series left out."""
    grouped: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, entry in series.items():
        points = usable_points(entry)
        if not points:
            continue
        unit = str(entry.get("unit", "")) if isinstance(entry, Mapping) else ""
        grouped.setdefault(unit, {})[str(name)] = points
    return grouped


def write_chart(series: Mapping[str, Any], path: Path, *, title: str) -> Path | None:
    """One PNG with a panel per unit; None (and no file) when no series has a usable point."""
    grouped = by_unit(series)
    if not grouped:
        return None
    width, height = PANEL_INCHES
    figure, axes = plt.subplots(
        len(grouped), 1, figsize=(width, height * len(grouped)), sharex=True, squeeze=False
    )
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    families = list(dict.fromkeys(family(name) for lines in grouped.values() for name in lines))
    try:
        for axis, (unit, lines) in zip(axes[:, 0], grouped.items(), strict=True):
            styles: dict[str, int] = {}
            for name, points in lines.items():
                xs, ys = zip(*points, strict=True)
                kin = family(name)
                style = LINE_STYLES[styles.get(kin, 0) % len(LINE_STYLES)]
                styles[kin] = styles.get(kin, 0) + 1
                axis.plot(
                    xs,
                    ys,
                    label=name,
                    color=palette[families.index(kin) % len(palette)],
                    linestyle=style,
                    linewidth=1.2,
                    marker="." if len(points) < 40 else None,
                )
            axis.set_ylabel(unit or "value")
            axis.set_ylim(bottom=0)
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize="small", loc="upper left", ncols=2)
        axes[-1, 0].set_xlabel("seconds into the run")
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(figure)
    return path
