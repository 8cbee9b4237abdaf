"""Rank-k curves (R@k against k) of a leaderboard table, as PNG.

One figure per (dataset, profile) with the ranked rows (and the reported ones, as points),
and a second, ``__analysis``, with the analysis rows (untrained controls, oracles, other
weights), so that neither is a tangle of 40 lines. The legend sits outside the axes, in rank
order and numbered by rank; colours cycle through ten and then change line style, so that
neighbouring ranks differ.
"""

from __future__ import annotations

import io
import re
from typing import Any, Optional, Sequence

from benchmark.reports.leaderboard_render import plot_filename
from benchmark.reports.leaderboard_tables import labels, split_rows

STYLES = ("-", "--", ":", "-.")


def _points(row: Any) -> tuple[list[int], list[float], bool]:
    """(ks, R@k, is_curve): the re-scored curve, else the row's R@k values as points."""
    if row.curve:
        return list(range(1, len(row.curve) + 1)), list(row.curve), True
    pts = sorted((int(n[1:]), v) for n, v in row.values.items() if re.fullmatch(r"R\d+", n))
    return [p[0] for p in pts], [p[1] for p in pts], False


def render_plot(title: str, rows: Sequence[Any], names: Sequence[str], ranks: Sequence[Optional[int]]) -> bytes:
    """PNG of R@k against k (log scale) for ``rows`` labelled ``names`` (legend in row order), a
    line labelled by its rank (``ranks[i]``, None: unnumbered) at its right end."""
    # matplotlib is heavy (about 0.5 s) and needed only when a plot is drawn; its backend is chosen
    # before anything else of it is imported
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    n = max(len(rows), 1)
    legend_rows = min(n, 24)
    fig = Figure(figsize=(11.0, max(4.6, 0.22 * legend_rows + 1.2)), dpi=100)
    ax = fig.add_axes((0.07, 0.11, 0.47, 0.80))
    palette = colormaps["tab10"].colors
    max_k = 10
    for i, (r, name) in enumerate(zip(rows, names)):
        ks, vals, curve = _points(r)
        if not ks:
            continue
        color = palette[i % len(palette)]
        tag = f"{ranks[i]}. " if ranks[i] is not None else ""
        if curve:
            ax.plot(
                ks,
                vals,
                color=color,
                linestyle=STYLES[(i // len(palette)) % len(STYLES)],
                linewidth=1.5,
                label=f"{tag}{name}",
            )
        else:
            ax.plot(
                ks, vals, color=color, linestyle="none", marker="o", markersize=5, label=f"{tag}{name} ({r.status})"
            )
        max_k = max(max_k, ks[-1])
    ax.set_xscale("log")
    ax.set_xlim(0.9, max_k * 1.1)
    ticks = [k for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500) if k <= max_k]
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 100)
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel("R@k (%)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            frameon=False,
            ncol=1 if len(rows) <= 24 else 2,
            handlelength=2.2,
        )
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15
    )  # legend kept, no blank margin
    return buf.getvalue()


def render_plots(board: Any) -> list[tuple[str, bytes]]:
    """(file name, PNG) per table: the ranked rows and reported points, then the analysis rows."""

    out = []
    for (dataset, profile), rows in board.tables.items():
        ranked, analysis, reported = split_rows(rows)
        names = labels(rows)
        main = [*ranked, *reported]
        if main:
            what = " and ".join(w for w, rs in (("ranked rows", ranked), ("reported points", reported)) if rs)
            out.append(
                (
                    plot_filename(dataset, profile),
                    render_plot(
                        f"{dataset}, profile {profile}: {what}",
                        main,
                        [names[id(r)] for r in main],
                        [*range(1, len(ranked) + 1), *[None] * len(reported)],
                    ),
                )
            )
        if analysis:
            out.append(
                (
                    plot_filename(dataset, profile, "analysis"),
                    render_plot(
                        f"{dataset}, profile {profile}: analysis rows (not ranked)",
                        analysis,
                        [names[id(r)] for r in analysis],
                        [None] * len(analysis),
                    ),
                )
            )
    return out
