"""PNG figures of pruning results (matplotlib, Agg backend, imported only when a figure is drawn).

    fxprune.figures.plot_layers(result.report, "layers.png")     # channels before/after per layer
    fxprune.figures.plot_bench(bench_result, "bench.png")        # onnxruntime latency per model and batch
    fxprune.figures.plot_lines({"l1": [(x, y), ...]}, "MACs kept (%)", "test accuracy (%)", "acc.png")
    fxprune.figures.plot_scatter([(x, y), ...], "params kept", "score", "search.png", chosen=(x, y), limit=0.5)
    fxprune.figures.plot_bars({"l1": 88.1, "fpgm": 87.9}, "test accuracy (%)", "at50.png", reference=("dense", 89))

Without matplotlib every function raises `PlotUnavailable`, whose message gives the pip line.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import FxPruneError

__all__ = ["PlotUnavailable", "INSTALL_MATPLOTLIB", "plot_layers", "plot_bench", "plot_lines", "plot_scatter",
           "plot_bars"]

INSTALL_MATPLOTLIB = "pip install matplotlib"
_DENSE, _KEPT, _FROZEN = "#c9ced6", "#2f6db5", "#e08a1e"


class PlotUnavailable(FxPruneError):
    """matplotlib is not installed; the message gives the pip line."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable(f"drawing figures needs matplotlib; install it with: {INSTALL_MATPLOTLIB}") from exc
    matplotlib.use("Agg", force=True)  # files only: never open a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a temp file then a rename), so a failed draw leaves no half-written PNG."""
    plt = _pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def plot_layers(report: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Horizontal bars of output channels before and after pruning for every layer; frozen layers marked.

    Normalisation layers (which follow their conv) are left out to keep the picture readable.

    Args:
        report: a `fxprune.report.Report` (`result.report`).
        path: the PNG file to write.
        title: the figure title (default: pruner, params and MACs before -> after).

    Returns:
        The path written.
    """
    plt = _pyplot()
    layers = [s for s in report.layers if "Norm" not in s.type] or list(report.layers)
    frozen = {name for g in report.groups if g.frozen >= g.channels and g.reasons for name in g.layers}
    names = [s.name for s in layers]
    n = len(layers)
    fig, ax = plt.subplots(figsize=(8.5, max(2.8, 0.26 * n + 1.6)))
    ys = list(range(n))[::-1]  # the first layer at the top
    from matplotlib.patches import Patch

    ax.barh(ys, [s.channels_before for s in layers], color=_DENSE, height=0.8)
    ax.barh(ys, [s.channels_after for s in layers], height=0.55,
            color=[_FROZEN if s.name in frozen else _KEPT for s in layers])
    handles = [Patch(color=_DENSE, label="before"), Patch(color=_KEPT, label="after")]
    if frozen & set(names):
        handles.append(Patch(color=_FROZEN, label="frozen group (kept whole)"))
    widest = max((s.channels_before for s in layers), default=1)
    if n <= 60:
        for y, s in zip(ys, layers):
            ax.text(s.channels_before + widest * 0.01, y, f"{s.channels_after}/{s.channels_before}",
                    va="center", ha="left", fontsize=7, color="#333333")
    ax.set_yticks(ys)
    ax.set_yticklabels([textwrap.shorten(name, 34, placeholder="…") for name in names],
                       fontsize=8 if n <= 40 else 6)
    ax.set_xlim(0, widest * 1.15)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("output channels (count)")
    ax.set_ylabel("layer (graph order)")
    # above the axes, under the title: inside, it would cover bars whatever corner it takes
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    if title is None:
        title = (f"{report.pruner}: params {report.params_before:,} → {report.params_after:,} "
                 f"(−{report.param_reduction:.0%}), MACs −{report.mac_reduction:.0%}")
    ax.set_title(title, fontsize=10, pad=22)
    return _save(fig, path)


def plot_bench(bench: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Bar chart of onnxruntime latency: one panel per batch size, one bar per model, whiskers to p90.

    Args:
        bench: a `fxprune.BenchResult`.
        path: the PNG file to write.
        title: the figure title (default: the machine line).

    Returns:
        The path written.
    """
    plt = _pyplot()
    batch_sizes = list(dict.fromkeys(r["batch"] for r in bench.rows))
    labels = list(dict.fromkeys(r["model"] for r in bench.rows))
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(max(4.5, 2.2 + 1.3 * len(labels) * len(batch_sizes)), 3.8),
                             squeeze=False)
    colors = [_DENSE, _KEPT, _FROZEN, "#5a9e4b", "#9b59b6", "#c0392b"]
    for ax, batch in zip(axes[0], batch_sizes):
        rows = {r["model"]: r for r in bench.rows if r["batch"] == batch}
        xs = list(range(len(labels)))
        med = [rows[m]["median_ms"] for m in labels]
        p90 = [rows[m]["p90_ms"] - rows[m]["median_ms"] for m in labels]
        ax.bar(xs, med, yerr=[[0] * len(labels), p90], capsize=3,
               color=[colors[i % len(colors)] for i in xs], edgecolor="#555555")
        top = max(m + p for m, p in zip(med, p90))
        for x, m in zip(xs, labels):
            ax.text(x, med[x] + p90[x] + top * 0.02, f"{rows[m]['speedup']:.2f}x", ha="center", va="bottom",
                    fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels([textwrap.shorten(m, 14, placeholder="…") for m in labels], fontsize=8)
        ax.set_ylim(0, top * 1.18)
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.set_xlabel("model (label: speedup over the first)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("median latency (ms), whisker to p90")
    fig.suptitle(title or textwrap.fill(f"onnxruntime CPU: {bench.machine}", 90, break_on_hyphens=False), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_lines(series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str,
               path: str | os.PathLike[str], title: str = "", reference: tuple[str, float] | None = None,
               invert_x: bool = False) -> Path:
    """One line with markers per series, e.g. accuracy against MACs kept per algorithm.

    Args:
        series: label -> [(x, y), ...] points (sorted by x here); empty series are skipped.
        xlabel, ylabel: axis labels (with units).
        path: the PNG file to write.
        title: the figure title.
        reference: (label, y) of a dashed horizontal line, e.g. ("dense", 98.2).
        invert_x: draw x decreasing left to right.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    markers = "osD^v<>pP*Xh"
    for i, (label, points) in enumerate(series.items()):
        if not points:
            continue
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], label=label,
                linewidth=1.4, markersize=5)
    if reference is not None:
        ax.axhline(reference[1], color="#555555", linestyle="--", linewidth=1, label=reference[0])
    if invert_x:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), framealpha=0.9)
    return _save(fig, path)


def plot_scatter(points: Sequence[tuple[float, float]], xlabel: str, ylabel: str, path: str | os.PathLike[str],
                 title: str = "", chosen: tuple[float, float] | None = None, limit: float | None = None,
                 reference: tuple[str, float] | None = None) -> Path:
    """Points coloured by their order (e.g. every candidate of a search), the chosen one starred.

    Args:
        points: (x, y) in the order they were produced (the colour runs from the first to the last).
        xlabel, ylabel: axis labels (with units).
        path: the PNG file to write.
        title: the figure title.
        chosen: the point to mark (drawn on top, with a star).
        limit: x of a dashed vertical line, e.g. the budget (points right of it do not meet it).
        reference: (label, y) of a dotted horizontal line, e.g. ("dense", 0.98).

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    if points:
        sc = ax.scatter([p[0] for p in points], [p[1] for p in points], c=range(len(points)), cmap="viridis",
                        s=22, alpha=0.85, edgecolors="none", label=f"candidates ({len(points)})")
        fig.colorbar(sc, ax=ax, pad=0.02).set_label("candidate (order evaluated)", fontsize=8)
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="*", s=260, color=_FROZEN, edgecolors="#333333", linewidths=0.8,
                   zorder=5, label=f"chosen ({chosen[0]:.3g}, {chosen[1]:.4g})")
    if limit is not None:
        ax.axvline(limit, color="#c0392b", linestyle="--", linewidth=1, label=f"budget ({limit:.3g})")
    if reference is not None:
        ax.axhline(reference[1], color="#555555", linestyle=":", linewidth=1,
                   label=f"{reference[0]} ({reference[1]:.4g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    # above the axes, under the title: inside, it would cover points whatever corner it takes
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=10, pad=8 + 14 * ((len(handles) + 1) // 2))
    return _save(fig, path)


def plot_bars(values: Mapping[str, float], xlabel: str, path: str | os.PathLike[str], title: str = "",
              reference: tuple[str, float] | None = None, band: float | None = None,
              band_label: str | None = None) -> Path:
    """Horizontal bars, best on top, each labelled with its value: e.g. every algorithm's accuracy at one amount.

    The x axis starts near the lowest value (not at 0), so that differences of a point stay visible.

    Args:
        values: label -> value.
        xlabel: the x axis label (with units).
        path: the PNG file to write.
        title: the figure title.
        reference: (label, x) of a dashed vertical line, e.g. ("dense", 89.7).
        band: shade [reference - band, reference] (e.g. 1 point below dense).
        band_label: the band's legend entry (default "within {band} of {reference label}").

    Returns:
        The path written.
    """
    plt = _pyplot()
    items = sorted(values.items(), key=lambda kv: kv[1])  # barh draws from the bottom: the best ends on top
    n = max(len(items), 1)
    fig, ax = plt.subplots(figsize=(7, max(2.6, 0.3 * n + 1.4)))
    xs = [v for _, v in items] + ([reference[1]] if reference else [])
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = max(hi - lo, 1e-9)
    left = lo - 0.25 * span if lo - 0.25 * span > 0 or lo <= 0 else 0.0
    ys = list(range(len(items)))
    ax.barh(ys, [v - left for _, v in items], left=left, color=_KEPT, height=0.6)
    for y, (_, v) in zip(ys, items):
        ax.text(v + span * 0.01, y, f"{v:.1f}", va="center", ha="left", fontsize=7, color="#333333", zorder=5,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # readable over the dense line
    if reference is not None:
        if band:
            ax.axvspan(reference[1] - band, reference[1], color=_FROZEN, alpha=0.15,
                       label=band_label or f"within {band:g} of {reference[0]}")
        ax.axvline(reference[1], color="#555555", linestyle="--", linewidth=1, label=reference[0])
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    ax.set_yticks(ys)
    ax.set_yticklabels([textwrap.shorten(k, 28, placeholder="…") for k, _ in items], fontsize=8)
    ax.set_xlim(left, hi + 0.12 * span)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10, pad=22 if reference is not None else 6)
    return _save(fig, path)
