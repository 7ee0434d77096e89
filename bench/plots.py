"""The benchmarks' pictures: PNGs drawn with matplotlib (Agg backend, no display) from their measured results.

matplotlib is in the ``bench`` extra; it is imported only when a script is asked for ``--plot DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# One colour per kind of contender, the same in every picture.
COLOURS = {"ours": "#1f77b4", "floor": "#7f7f7f", "peer": "#d62728"}


@dataclass
class Bar:
    label: str
    kind: str  # ours | floor | peer
    seconds: float  # the median
    low: float  # fastest round
    high: float  # slowest round
    requests: int


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version stamp: stable bytes
    return path


def prefix_restore(bars: Sequence[Bar], path: str, title: str) -> str:
    """Time and requests of each contender, side by side (bars; whiskers from the fastest to the slowest round)."""
    plt = _pyplot()
    fig, (ax_time, ax_req) = plt.subplots(1, 2, figsize=(11, 0.45 * len(bars) + 1.8), sharey=True)
    y = list(range(len(bars)))[::-1]
    colours = [COLOURS[b.kind] for b in bars]
    errors = [[b.seconds - b.low for b in bars], [b.high - b.seconds for b in bars]]
    ax_time.barh(y, [b.seconds for b in bars], color=colours, xerr=errors, capsize=3)
    for yy, b in zip(y, bars, strict=True):
        ax_time.text(b.high, yy, f"  {b.seconds:.2f} s", va="center", fontsize=8)
    ax_time.set_yticks(y, [b.label for b in bars], fontsize=9)
    ax_time.set_xlabel("seconds (median; whiskers: fastest and slowest round)")
    ax_time.set_xlim(0, max(b.high for b in bars) * 1.25)
    ax_req.barh(y, [b.requests for b in bars], color=colours)
    ax_req.set_xscale("log")
    for yy, b in zip(y, bars, strict=True):
        ax_req.text(b.requests, yy, f"  {b.requests:,}", va="center", fontsize=8)
    ax_req.set_xlabel("requests (log scale)")
    ax_req.set_xlim(1, max(b.requests for b in bars) * 8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, ["airflow-fuse", "bare boto3 floor", "peer tool"], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.06), frameon=False)
    for ax in (ax_time, ax_req):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path


def scale(results: Sequence[dict[str, Any]], path: str, title: str, goal_bytes: float = 150) -> str:
    """Memory per listed entry and wall time (with its phases) against the table's size, entries on the x axis.

    ``results`` are bench.scale's measurements: entries listed, wall/listing/restore seconds, baseline and peak RSS.
    """
    plt = _pyplot()
    entries = [r["listed"] for r in results]
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    per_entry = [(r["peak_rss"] - r["baseline_rss"]) / max(1, r["listed"]) for r in results]
    at_listing = [(r["listing_rss"] - r["baseline_rss"]) / max(1, r["listed"]) for r in results]
    ax_mem.plot(entries, per_entry, "o-", color=COLOURS["ours"], label="peak RSS above baseline")
    ax_mem.plot(entries, at_listing, "s--", color="#2ca02c", label="RSS at the end of the listing")
    ax_mem.axhline(goal_bytes, color=COLOURS["peer"], linestyle=":", label=f"goal: {goal_bytes:g} B")
    for x, v in zip(entries, per_entry, strict=True):
        ax_mem.annotate(f"{v:,.0f} B", (x, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax_mem.set_ylabel("bytes of RSS per listed entry")
    ax_mem.set_ylim(0, max(per_entry + [goal_bytes]) * 1.25)
    wall = [r["wall"] for r in results]
    listing = [r["listing_seconds"] for r in results]
    restore = [r["restore_seconds"] for r in results]
    plan = [w - a - b for w, a, b in zip(wall, listing, restore, strict=True)]
    ax_time.plot(entries, wall, "o-", color=COLOURS["ours"], label="wall time")
    ax_time.plot(entries, listing, "s--", label="scan listing")
    ax_time.plot(entries, plan, "^--", label="inventory + plan")
    ax_time.plot(entries, restore, "v--", label="restore")
    ax_time.plot(entries, [r["cpu"] for r in results], "x:", color="black", label="client CPU (all threads)")
    for x, v in zip(entries, wall, strict=True):
        ax_time.annotate(f"{v:,.1f} s", (x, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax_time.set_yscale("log")
    ax_time.margins(y=0.15)
    ax_time.set_ylabel("seconds (log scale)")
    for ax in (ax_mem, ax_time):
        ax.set_xscale("log")
        ax.set_xticks(entries, [f"{e / 1000:,.0f}k" if e < 1_000_000 else f"{e / 1e6:g} M" for e in entries])
        ax.minorticks_off()
        ax.set_xlabel("listed entries (log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path
