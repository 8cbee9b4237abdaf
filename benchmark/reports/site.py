"""The static leaderboard site, ``results/site/``: plain HTML, CSS and JavaScript.

Written by :func:`benchmark.reports.leaderboard.regenerate` beside the Markdown tables. It needs no
server and no network (open ``index.html`` from disk): the data ride in ``data.js`` as one
``window.LPR_DATA = {...}`` assignment (browsers refuse ``fetch`` of ``file://`` URLs), and
``app.js`` / ``style.css`` are copied from ``benchmark/reports/site_assets/``. Per (dataset,
profile) it shows sortable ranked (one row per method, its seeds pooled) / per-method
variants / analysis / reported tables with R1/R5/R10/mAP@K and their intervals drawn as bars,
the seed-aware comparisons (each ranked row against the next and against the best, each
variant against its method's main row, from :mod:`benchmark.evaluation.significance`; and any
two one-seed rows on request in the page: a sign-flip p-value on hit@1); the page opens on a
table with ranked rows; per-attribute breakdowns as a heat map, rank-k curves and each
row's provenance. Per-query hit@1 strings make the page's own comparisons possible; no
images are embedded, so the committed site stays small (about 0.3 MB for ~70 rows).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from benchmark.evaluation.significance import METHOD as TEST_METHOD
from benchmark.reports.leaderboard_tables import (
    flags,
    labels,
    main_rows,
    map_header,
    seeds_of,
    split_rows,
    variant_groups,
)

SITE_SUBDIR = "site"
ASSETS = Path(__file__).resolve().parent / "site_assets"
ASSET_FILES = ("app.js", "style.css")
CURVE_MAX_K = 50


def _r(x: Any, digits: int = 2) -> Any:
    return None if x is None else round(float(x), digits)


def _pair(test: Any) -> dict[str, Any]:
    """A paired test for the page, its floats rounded (to 4 decimals; p to 4 significant digits) so the
    file does not change with the last bits of a bootstrap that the thread count moves."""
    d = test.as_dict()
    return {
        **d,
        "diff": _r(d["diff"], 4),
        "ci": [_r(c, 4) for c in d["ci"]],
        "p": None if d["p"] is None else float(f"{d['p']:.4g}"),
    }


def _provenance(row: Any) -> dict[str, Any]:
    prov = row.provenance or {}
    git = prov.get("git") or {}
    return {
        "file": row.path,
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "seed": row.seed,
        "date": (prov.get("date") or row.date or None),
        "device": prov.get("device"),
        "python": prov.get("python"),
        "world_size": prov.get("world_size"),
        "run_dir": prov.get("run_dir"),
        "command": prov.get("command"),
        "train_s": _r(row.train_s, 1),
        "wall_time_s": {k: _r(v, 1) for k, v in (prov.get("wall_time_s") or {}).items()},
        "packages": prov.get("packages") or {},
        "initial_weights": prov.get("initial_weights"),
        "reproduce": (
            f"run_benchmark.py reproduce results/{row.path}"
            if row.path and git.get("commit") and not prov.get("initial_weights")
            else None
        ),
        "inference": prov.get("inference"),
    }


def _breakdowns(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, buckets in (row.breakdowns or {}).items():
        out[attr] = {}
        for value, b in buckets.items():
            cell = {"n": b.get("n")}
            for name, e in b.items():
                if isinstance(e, dict) and "value" in e and (name in ("R1", "R5", "R10") or name.startswith("mAP@")):
                    cell[name if not name.startswith("mAP@") else "mAP"] = _r(e["value"])
            out[attr][str(value)] = cell
    return out


def _row(row: Any, name: str, kind: str, rank: Any) -> dict[str, Any]:
    runs = getattr(row, "runs", None) or []
    hits = row.per_query.get("R1") if row.per_query and not runs else None  # one run's hits (the page's own test)
    return {
        "seeds": seeds_of(row),
        "per_seed": [
            {"seed": r.seed, "R1": _r(r.values.get("R1")), "mAP": _r(r.values.get("mAP")), "file": r.path} for r in runs
        ],
        "label": name,
        "kind": kind,
        "rank": rank,
        "flags": flags(row) if kind == "analysis" else [],
        "status": row.status,
        "method": row.method,
        "variant": row.variant,
        "stage": row.stage,
        "values": {k: _r(v) for k, v in row.values.items()},
        "cis": {k: [_r(c[0]), _r(c[1])] for k, c in row.cis.items() if c is not None},
        "map_label": row.map_label,
        "params": row.num_parameters,
        "note": row.note,
        "control": {k: _r(v) for k, v in (row.control or {}).items()},
        "curve": [_r(v) for v in (row.curve or [])[:CURVE_MAX_K]],
        "breakdowns": _breakdowns(row),
        "provenance": _provenance(row) if row.source != "reported" else {},
        "split": row.split[:12],
        "hits": "".join("1" if v > 0 else "0" for v in hits) if hits is not None else None,
    }


def site_data(board: Any) -> dict[str, Any]:
    """Everything the page shows, as JSON-able data."""
    tables = []
    # tables with ranked rows first: the page opens on the first
    for key, rows in sorted(board.tables.items(), key=lambda kv: not split_rows(kv[1])[0]):
        ranked, analysis, reported = split_rows(rows)
        groups, mains = variant_groups(rows), main_rows(rows)
        names = labels(rows)
        pairs = board.pairs.get(key, [])
        best = getattr(board, "vs_best", {}).get(key, [])
        vs_main = getattr(board, "vs_main", {}).get(key, {})
        data_rows = [_row(r, names[id(r)], "ranked", i + 1) for i, r in enumerate(ranked)]
        for method, members in groups.items():
            tests = vs_main.get(method, [])
            for i, r in enumerate(members):
                data_rows.append(
                    {
                        **_row(r, names[id(r)], "variant", None),
                        "main": names[id(mains[method])] if method in mains else None,
                        "vs_main": {m: _pair(t) for m, t in (tests[i] if i < len(tests) else {}).items()},
                    }
                )
        data_rows += [_row(r, names[id(r)], "analysis", None) for r in analysis] + [
            _row(r, names[id(r)], "reported", None) for r in reported
        ]
        for i, test in enumerate(best):
            if i < len(ranked) and test:
                data_rows[i]["vs_best"] = {m: _pair(t) for m, t in test.items()}
        adjacent = [
            {"a": i, "b": i + 1, **{m: _pair(t) for m, t in pairs[i].items()}}
            for i in range(max(len(ranked) - 1, 0))
            if i < len(pairs)
        ]
        tables.append(
            {
                "id": f"{key[0]}__{key[1]}",
                "dataset": key[0],
                "profile": key[1],
                "map_label": map_header(rows),
                "rows": data_rows,
                "pairs": adjacent,
            }
        )
    return {"schema": 2, "test": TEST_METHOD, "tables": tables}


INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LPR-Bench leaderboard</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<header>
<h1>LPR-Bench leaderboard</h1>
<p class="lede">Livestreaming product recognition: each row's rankings re-scored against the ground truth.
Generated by <code>run_benchmark.py leaderboard</code>; do not edit. Click a column header to sort, a row for its
provenance and breakdowns.</p>
<nav id="tabs" aria-label="dataset and profile"></nav>
</header>
<main id="app"><noscript>This page needs JavaScript; the same tables are in results/leaderboard.md.</noscript></main>
<footer><p>Paired test: {test}.</p></footer>
<script src="data.js"></script>
<script src="app.js"></script>
</body>
</html>
"""


def render_site(board: Any) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every site file, deterministic."""
    data = json.dumps(site_data(board), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    out = [
        ("index.html", INDEX.replace("{test}", html.escape(TEST_METHOD)).encode("utf-8")),
        ("data.js", f"window.LPR_DATA = {data};\n".encode("utf-8")),
    ]
    out += [(name, (ASSETS / name).read_bytes()) for name in ASSET_FILES]
    return out
