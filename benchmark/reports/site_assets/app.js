/* LPR-Bench static site: renders window.LPR_DATA (data.js). No network, no libraries. */
(function () {
  "use strict";
  var DATA = window.LPR_DATA || { tables: [] };
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var DASHES = ["", "6 3", "2 3", "8 3 2 3"];
  var state = { table: null, sort: {}, selected: null, attr: null, shown: null, breakMetric: "R1", withAnalysis: false };
  var app = document.getElementById("app");

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function fmt(x, d) { return x === null || x === undefined ? "\u2013" : Number(x).toFixed(d === undefined ? 2 : d); }
  function signed(x) { return (x >= 0 ? "+" : "") + fmt(x); }
  function fmtP(p) { return p < 0.001 ? "<0.001" : p.toFixed(3); }
  function duration(s) {
    if (s === null || s === undefined) return "\u2013";
    return s < 60 ? s.toFixed(0) + "s" : s < 3600 ? (s / 60).toFixed(1) + "min" : (s / 3600).toFixed(1) + "h";
  }
  function params(n) {
    if (n === null || n === undefined) return "\u2013";
    return n >= 1e9 ? (n / 1e9).toFixed(2) + "B" : n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "K" : String(n);
  }

  /* The bar scale of a metric column: [lo, hi] rounded out to tens over the rows' values and intervals. */
  function scaleOf(rows, name) {
    var lo = 100, hi = 0;
    rows.forEach(function (r) {
      var v = r.values[name], ci = r.cis[name];
      if (v === undefined) return;
      lo = Math.min(lo, ci ? ci[0] : v); hi = Math.max(hi, ci ? ci[1] : v);
    });
    if (lo > hi) return [0, 100];
    lo = Math.max(0, Math.floor(lo / 10) * 10); hi = Math.min(100, Math.ceil(hi / 10) * 10);
    return hi - lo < 10 ? [Math.max(0, hi - 10), Math.max(10, hi)] : [lo, hi];
  }

  /* A value with its 95% interval drawn as a bar on the column's scale. */
  function metricCell(row, name, mark, scale) {
    var v = row.values[name], ci = row.cis[name];
    var td = el("td", { class: "num", "data-sort": v === undefined ? "" : String(v) });
    if (v === undefined) { td.textContent = "\u2013"; return td; }
    var box = el("span", { class: "metric" });
    var w = 90, lo = scale[0], span = scale[1] - scale[0];
    var pos = function (x) { return Math.max(0, Math.min(w, (x - lo) / span * w)); };
    var s = svg("svg", { width: w, height: 12, viewBox: "0 0 " + w + " 12", role: "img" });
    s.appendChild(svg("rect", { x: 0, y: 5, width: w, height: 2, fill: "#e6e9ee" }));
    if (ci) {
      var t = el("title", {}); t.textContent = name + " 95% CI [" + fmt(ci[0]) + ", " + fmt(ci[1]) + "] (bar scale " + scale[0] + "\u2013" + scale[1] + ")";
      s.appendChild(t);
      s.appendChild(svg("rect", { x: pos(ci[0]), y: 2, width: Math.max(2, pos(ci[1]) - pos(ci[0])), height: 8, fill: "#9dbbe6", rx: 2 }));
    }
    s.appendChild(svg("rect", { x: Math.min(w - 2, pos(v) - 1), y: 0, width: 2, height: 12, fill: "#163f80" }));
    box.appendChild(s);
    box.appendChild(el("span", { class: "v", text: fmt(v) }));
    box.appendChild(mark ? el("span", { class: "mark", title: "not significantly different from the next ranked row (paired test)", text: "\u2020" })
      : el("span", { class: "mark", "aria-hidden": "true" }));
    td.appendChild(box);
    if (ci) td.title = name + " " + fmt(v) + " [" + fmt(ci[0]) + ", " + fmt(ci[1]) + "]";
    return td;
  }

  function controlText(row) {
    if (!row.control || row.control.R1 === undefined || row.values.R1 === undefined) return "\u2013";
    return ["R1", "R10"].map(function (m) {
      if (row.control[m] === undefined) return "\u2013";
      var ci = row.cis[m], base = row.control[m];
      return signed(row.values[m] - base) + (ci && ci[0] <= base ? " (n.s.)" : "");
    }).join(" / ");
  }

  /* A sortable table: columns [{key, label, num, cell(row) -> td, value(row)}]. */
  function sortableTable(id, rows, columns, onSelect) {
    var sortKey = state.table.id + "/" + id;  // each tab keeps its own order
    var sort = state.sort[sortKey] || null;
    var table = el("table", { id: id });
    var tr = el("tr");
    columns.forEach(function (c) {
      var th = el("th", { class: (c.num ? "num " : "") + (c.value ? "sortable" : ""), scope: "col", text: c.label });
      if (c.title) th.title = c.title;
      if (c.value) {
        th.setAttribute("aria-sort", sort && sort.key === c.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
        th.setAttribute("data-key", c.key);
        th.addEventListener("click", function () {
          var cur = state.sort[sortKey];
          var dir = cur && cur.key === c.key ? -cur.dir : (c.num ? -1 : 1);
          state.sort[sortKey] = { key: c.key, dir: dir };
          render();
        });
      }
      tr.appendChild(th);
    });
    table.appendChild(el("thead", {}, [tr]));
    var order = rows.slice();
    if (sort) {
      var col = columns.filter(function (c) { return c.key === sort.key; })[0];
      if (col) {
        order.sort(function (a, b) {
          var x = col.value(a), y = col.value(b);
          var missX = x === null || x === undefined, missY = y === null || y === undefined;
          if (missX || missY) return missX === missY ? 0 : missX ? 1 : -1;
          return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
        });
      }
    }
    var body = el("tbody");
    order.forEach(function (r) {
      var row = el("tr", { class: "clickable" + (state.selected === r ? " selected" : "") });
      columns.forEach(function (c) { row.appendChild(c.cell(r)); });
      row.addEventListener("click", function () { onSelect(r); });
      body.appendChild(row);
    });
    table.appendChild(body);
    return el("div", { class: "scroll" }, [table]);
  }

  function metricColumns(t, pairsByRank, rows) {
    var sc = {};
    ["R1", "R5", "R10", "mAP"].forEach(function (m) { sc[m] = scaleOf(rows, m); });
    function label(name, m) { return name + " (" + sc[m][0] + "\u2013" + sc[m][1] + ")"; }
    function marked(r, m) {
      var p = r.rank ? pairsByRank[r.rank] : null;
      return !!(p && p[m] && !p[m].significant);
    }
    return [
      { key: "R1", label: "R1", num: true, title: "bars: 95% CI (light) and value (dark); bar scale " + label("R1", "R1"), value: function (r) { return r.values.R1; }, cell: function (r) { return metricCell(r, "R1", marked(r, "R1"), sc.R1); } },
      { key: "R5", label: "R5", num: true, title: "bar scale " + label("R5", "R5"), value: function (r) { return r.values.R5; }, cell: function (r) { return metricCell(r, "R5", false, sc.R5); } },
      { key: "R10", label: "R10", num: true, title: "bar scale " + label("R10", "R10"), value: function (r) { return r.values.R10; }, cell: function (r) { return metricCell(r, "R10", false, sc.R10); } },
      { key: "mAP", label: t.map_label, num: true, title: "bar scale " + label("mAP", "mAP"), value: function (r) { return r.values.mAP; }, cell: function (r) { return metricCell(r, "mAP", marked(r, "mAP"), sc.mAP); } }
    ];
  }

  function methodCell(r) {
    var td = el("td", { class: "method" }, [r.label]);
    if (r.status === "unverified") td.appendChild(el("span", { class: "tag warn", text: "unverified" }));
    (r.flags || []).forEach(function (f) { td.appendChild(el("span", { class: "tag", text: f })); });
    return td;
  }

  function select(r) { state.selected = state.selected === r ? null : r; renderAndShow(); }

  function rankedSection(t, ranked, pairsByRank) {
    var cols = [{ key: "rank", label: "#", num: true, value: function (r) { return r.rank; }, cell: function (r) { return el("td", { class: "num", text: String(r.rank) }); } },
      { key: "label", label: "Method", value: function (r) { return r.label.toLowerCase(); }, cell: methodCell },
      { key: "seeds", label: "Seeds", num: true, value: function (r) { return (r.seeds || []).length; }, cell: function (r) { return el("td", { class: "num", text: seedsText(r) }); } }]
      .concat(metricColumns(t, pairsByRank, ranked))
      .concat([
        { key: "control", label: "vs untrained", num: true, title: "R1 / R10 gained over the untrained control; (n.s.): the control lies inside the 95% CI",
          value: function (r) { return r.control && r.control.R1 !== undefined ? r.values.R1 - r.control.R1 : null; },
          cell: function (r) { return el("td", { class: "num", text: controlText(r) }); } },
        { key: "params", label: "Params", num: true, value: function (r) { return r.params; }, cell: function (r) { return el("td", { class: "num", text: params(r.params) }); } },
        { key: "train", label: "Train time", num: true, value: function (r) { return r.provenance.train_s; }, cell: function (r) { return el("td", { class: "num", text: duration(r.provenance.train_s) }); } }
      ]);
    return sortableTable("ranked", ranked, cols, select);
  }

  function pairsSection(t, ranked) {
    var rows = t.pairs.map(function (p) {
      var a = ranked[p.a], b = ranked[p.b];
      function cells(m) {
        var x = p[m];
        if (!x) return [el("td", { class: "num", text: "\u2013" }), el("td", { class: "num", text: "\u2013" })];
        return [el("td", { class: "num" + (x.significant ? "" : " ns"), text: signed(x.diff) + " [" + signed(x.ci[0]) + ", " + signed(x.ci[1]) + "]" }),
          el("td", { class: "num" + (x.significant ? "" : " ns"), text: fmtP(x.p) + (x.significant ? "" : " \u2020") })];
      }
      return el("tr", {}, [el("td", { text: a.rank + " vs " + b.rank }), el("td", { class: "method", text: a.label + "  \u2192  " + b.label })]
        .concat(cells("R1")).concat(cells("mAP")));
    });
    var head = el("tr", {}, ["Ranks", "Rows (upper \u2192 lower)", "\u0394R1 [95% CI]", "p (R1)", "\u0394AP [95% CI]", "p (AP)"].map(function (h, i) {
      return el("th", { class: i > 1 ? "num" : "", text: h });
    }));
    return el("div", { class: "scroll" }, [el("table", { id: "pairs" }, [el("thead", {}, [head]), el("tbody", {}, rows)])]);
  }

  /* Any two rows: exact sign-flip p-value on hit@1 (= exact McNemar), paired bootstrap CI. */
  function seedsText(r) { var n = (r.seeds || []).length; return n ? n + (n === 1 ? " seed" : " seeds") : "\u2013"; }

  function testTable(id, rows, field, against) {
    var head = el("tr", {}, ["Method", "Against", "Seeds", "R1", "\u0394R1 [95% CI]", "p (R1)", "\u0394AP [95% CI]", "p (AP)", "Variance"].map(function (h) { return el("th", { text: h }); }));
    var body = rows.map(function (r) {
      var tests = r[field] || {};
      function cells(m) {
        var x = tests[m];
        return x ? [el("td", { class: "num", text: signed(x.diff) + " [" + signed(x.ci[0]) + ", " + signed(x.ci[1]) + "]" }), el("td", { class: "num", text: fmtP(x.p) })]
          : [el("td", { text: "\u2013" }), el("td", { text: "\u2013" })];
      }
      var any = tests.R1 || tests.mAP;
      var basis = any ? (any.seed_term === "none" ? "queries only (1 seed)" : "seeds (" + any.seed_term + ") + queries") : "\u2013";
      var tr = el("tr", { class: "clickable" + (state.selected === r ? " selected" : "") }, [el("td", { text: r.label }), el("td", { text: against || r.main || "no main row" }),
        el("td", { class: "num", text: seedsText(r) }), el("td", { class: "num", text: fmt(r.values.R1) })].concat(cells("R1")).concat(cells("mAP")).concat([el("td", { text: basis })]));
      tr.addEventListener("click", function () { select(r); });
      return tr;
    });
    return el("div", { class: "scroll" }, [el("table", { id: id }, [el("thead", {}, [head]), el("tbody", {}, body)])]);
  }

  function compareSection(t) {
    var rows = t.rows.filter(function (r) { return r.hits; });
    var wrap = el("div");
    if (rows.length < 2) return wrap;
    function picker(id, idx) {
      var s = el("select", { id: id });
      rows.forEach(function (r, i) { var o = el("option", { value: String(i), text: (r.rank ? r.rank + ". " : "\u2013 ") + r.label }); if (i === idx) o.selected = true; s.appendChild(o); });
      return s;
    }
    var a = picker("cmp-a", 0), b = picker("cmp-b", Math.min(1, rows.length - 1));
    var out = el("div", { id: "compare-out" });
    function run() {
      var ra = rows[+a.value], rb = rows[+b.value];
      if (ra.hits.length !== rb.hits.length || ra.split !== rb.split) { out.textContent = "These two rows were scored on different splits."; return; }
      var n = ra.hits.length, up = 0, down = 0, d = new Array(n);
      for (var i = 0; i < n; i++) { d[i] = (+ra.hits[i] - +rb.hits[i]) * 100; if (d[i] > 0) up++; else if (d[i] < 0) down++; }
      var m = up + down, lf = [0];
      for (i = 1; i <= m; i++) lf.push(lf[i - 1] + Math.log(i));
      var p = 0;
      for (var k = 0; k <= m; k++) if (Math.abs(2 * k - m) >= Math.abs(up - down)) p += Math.exp(lf[m] - lf[k] - lf[m - k] - m * Math.LN2);
      var seed = 12345, sums = [];
      function rnd() { seed = (seed + 0x6D2B79F5) | 0; var x = Math.imul(seed ^ (seed >>> 15), 1 | seed); x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x; return ((x ^ (x >>> 14)) >>> 0) / 4294967296; }
      for (var bI = 0; bI < 2000; bI++) { var s = 0; for (i = 0; i < n; i++) s += d[Math.floor(rnd() * n)]; sums.push(s / n); }
      sums.sort(function (x, y) { return x - y; });
      var diff = (up - down) * 100 / n;
      out.textContent = "R1: " + signed(diff) + " points [" + signed(sums[49]) + ", " + signed(sums[1949]) + "], p = " + fmtP(Math.min(1, p)) +
        " (" + (p < 0.05 ? "significant" : "not significant") + " at 0.05; " + up + " queries only the first gets right, " + down + " only the second; " + n + " queries). " +
        "Exact sign-flip test on hit@1; interval: paired bootstrap, 2,000 resamples in the page.";
    }
    var btn = el("button", { type: "button", id: "cmp-run", text: "Compare" });
    btn.addEventListener("click", run);
    wrap.appendChild(el("div", { class: "compare" }, [el("span", { text: "Compare any two rows on R1:" }), a, el("span", { text: "vs" }), b, btn]));
    wrap.appendChild(out);
    return wrap;
  }

  function curveChart(t) {
    var withCurve = t.rows.filter(function (r) { return r.curve && r.curve.length; });
    if (!state.shown || state.shown.table !== t.id) {
      var ids = {};
      withCurve.filter(function (r) { return r.kind === "ranked"; }).slice(0, 8).forEach(function (r) { ids[r.label] = true; });
      state.shown = { table: t.id, ids: ids };
    }
    var W = 640, H = 360, L = 44, R = 12, T = 12, B = 36, maxK = 1;
    withCurve.forEach(function (r) { maxK = Math.max(maxK, r.curve.length); });
    var x = function (k) { return L + Math.log(k) / Math.log(maxK) * (W - L - R); };
    var y = function (v) { return T + (1 - v / 100) * (H - T - B); };
    var s = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "rank-k curves" });
    [0, 20, 40, 60, 80, 100].forEach(function (v) {
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e8ec" }));
      var lab = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6673" }); lab.textContent = v; s.appendChild(lab);
    });
    [1, 2, 5, 10, 20, 50, 100].filter(function (k) { return k <= maxK; }).forEach(function (k) {
      s.appendChild(svg("line", { x1: x(k), x2: x(k), y1: T, y2: H - B, stroke: "#e5e8ec" }));
      var lab = svg("text", { x: x(k), y: H - B + 15, "text-anchor": "middle", "font-size": 11, fill: "#5b6673" }); lab.textContent = k; s.appendChild(lab);
    });
    var xl = svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 12, fill: "#1d232b" }); xl.textContent = "k (log scale)"; s.appendChild(xl);
    var yl = svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, fill: "#1d232b", transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }); yl.textContent = "R@k (%)"; s.appendChild(yl);
    var picker = el("div", { class: "picker" });
    withCurve.forEach(function (r, i) {
      var color = PALETTE[i % PALETTE.length], dash = DASHES[Math.floor(i / PALETTE.length) % DASHES.length];
      var on = !!state.shown.ids[r.label];
      if (on) {
        var pts = r.curve.map(function (v, k) { return x(k + 1).toFixed(1) + "," + y(v).toFixed(1); }).join(" ");
        var line = svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 1.8, "stroke-dasharray": dash });
        var tt = svg("title", {}); tt.textContent = r.label; line.appendChild(tt);
        s.appendChild(line);
      }
      var box = el("input", { type: "checkbox" }); box.checked = on;
      box.addEventListener("change", function () { if (box.checked) state.shown.ids[r.label] = true; else delete state.shown.ids[r.label]; render(); });
      var sw = svg("svg", { width: 22, height: 8, class: "swatch" });
      sw.appendChild(svg("line", { x1: 0, x2: 22, y1: 4, y2: 4, stroke: color, "stroke-width": 2.5, "stroke-dasharray": dash }));
      picker.appendChild(el("label", {}, [box, sw, (r.rank ? r.rank + ". " : "\u2013 ") + r.label]));
    });
    return el("div", { class: "grid2" }, [s, picker]);
  }

  function breakdownSection(t) {
    var all = t.rows.filter(function (r) { return r.breakdowns && Object.keys(r.breakdowns).length; });
    var rows = all.filter(function (r) { return state.withAnalysis || r.kind !== "analysis"; });
    var wrap = el("div");
    if (!all.length) return wrap;
    var attrs = Object.keys(all[0].breakdowns).sort();
    if (attrs.indexOf(state.attr) < 0) state.attr = attrs.indexOf("scale") >= 0 ? "scale" : attrs[0];
    var metric = state.breakMetric || "R1";
    var sel = el("select", { id: "attr" });
    attrs.forEach(function (a) { var o = el("option", { value: a, text: a }); if (a === state.attr) o.selected = true; sel.appendChild(o); });
    sel.addEventListener("change", function () { state.attr = sel.value; render(); });
    var msel = el("select", { id: "attr-metric" });
    ["R1", "R5", "R10", "mAP"].forEach(function (m) { var o = el("option", { value: m, text: m === "mAP" ? t.map_label : m }); if (m === metric) o.selected = true; msel.appendChild(o); });
    msel.addEventListener("change", function () { state.breakMetric = msel.value; render(); });
    var box = el("input", { type: "checkbox", id: "attr-analysis" }); box.checked = !!state.withAnalysis;
    box.addEventListener("change", function () { state.withAnalysis = box.checked; render(); });
    wrap.appendChild(el("div", { class: "compare" }, [msel, el("span", { text: "by" }), sel,
      el("label", {}, [box, " with analysis rows"]), el("span", { class: "hint", text: "cell colour: the value (white 0, blue 100); n = queries in the bucket" })]));
    var buckets = Object.keys(all[0].breakdowns[state.attr] || {});
    var head = el("tr", {}, [el("th", { text: "Method" })].concat(buckets.map(function (b) {
      return el("th", { class: "num", text: b + " (n=" + all[0].breakdowns[state.attr][b].n + ")" });
    })));
    var body = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr", {}, [el("td", { class: "method", text: (r.rank ? r.rank + ". " : "\u2013 ") + r.label })]);
      buckets.forEach(function (b) {
        var c = (r.breakdowns[state.attr] || {})[b], v = c ? c[metric] : undefined;
        var td = el("td", { class: "num", text: fmt(v) });
        if (v !== undefined && v !== null) { td.style.background = "rgba(31,95,191," + (v / 100 * 0.75).toFixed(3) + ")"; if (v > 60) td.style.color = "#fff"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    wrap.appendChild(el("div", { class: "scroll" }, [el("table", { class: "heat", id: "breakdown" }, [el("thead", {}, [head]), body])]));
    return wrap;
  }

  function detailsPanel(r) {
    var p = r.provenance || {}, dl = el("dl");
    function add(k, v) { if (v !== null && v !== undefined && v !== "") { dl.appendChild(el("dt", { text: k })); dl.appendChild(el("dd", { text: String(v) })); } }
    add("Row", r.label); add("Status", r.status + (r.flags && r.flags.length ? " (" + r.flags.join(", ") + ")" : ""));
    add("Values", ["R1", "R5", "R10", "mAP"].filter(function (m) { return r.values[m] !== undefined; }).map(function (m) {
      var ci = r.cis[m]; return (m === "mAP" ? r.map_label : m) + " " + fmt(r.values[m]) + (ci ? " [" + fmt(ci[0]) + ", " + fmt(ci[1]) + "]" : "");
    }).join("; "));
    add("Submission", p.file); add("Commit", p.commit ? p.commit + (p.dirty ? " (dirty tree)" : "") : null);
    if (r.kind !== "reported") add("Command", p.command || "not recorded");
    add("Reproduce", p.reproduce);
    add("Seeds", (r.seeds || []).join(", ") + " (" + seedsText(r) + ")");
    if (r.per_seed && r.per_seed.length) add("Per seed", r.per_seed.map(function (s) { return "seed " + s.seed + ": R1 " + fmt(s.R1) + (s.mAP !== null ? ", " + r.map_label + " " + fmt(s.mAP) : ""); }).join("; "));
    add("Date", p.date); add("Train time", p.train_s !== undefined ? duration(p.train_s) : null);
    add("Wall times (s)", p.wall_time_s ? Object.keys(p.wall_time_s).map(function (k) { return k + " " + p.wall_time_s[k]; }).join(", ") : null);
    var inf = p.inference;
    add("Inference", inf ? (inf.queries_per_s !== null ? inf.queries_per_s + " queries/s" : "not measured (feature cache)") + " (" + inf.queries + " queries, " + inf.gallery + " gallery images, " + inf.pairs_scored + " pairs re-scored, " + inf.threads + " threads)" : null);
    add("Device", p.device); add("Python", p.python);
    add("Packages", p.packages ? Object.keys(p.packages).sort().map(function (k) { return k + " " + p.packages[k]; }).join(", ") : null);
    add("Note", r.note);
    return el("div", { class: "panel", id: "details" }, [el("strong", { text: "Provenance" }), dl]);
  }

  function render() {
    var tables = DATA.tables;
    var hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    state.table = tables.filter(function (t) { return t.id === hash; })[0] || state.table || tables[0];
    var nav = document.getElementById("tabs");
    nav.textContent = "";
    tables.forEach(function (t) {
      var a = el("a", { href: "#" + encodeURIComponent(t.id), class: t === state.table ? "active" : "" }, [t.dataset + " \u00b7 " + t.profile + " ",
        el("span", { class: "count", text: "(" + t.rows.length + ")" })]);
      nav.appendChild(a);
    });
    app.textContent = "";
    var t = state.table;
    if (!t) { app.appendChild(el("p", { text: "No submissions yet." })); return; }
    var ranked = t.rows.filter(function (r) { return r.kind === "ranked"; });
    var variants = t.rows.filter(function (r) { return r.kind === "variant"; });
    var analysis = t.rows.filter(function (r) { return r.kind === "analysis"; });
    var reported = t.rows.filter(function (r) { return r.kind === "reported"; });
    var pairsByRank = {};
    t.pairs.forEach(function (p) { pairsByRank[ranked[p.a].rank] = p; });
    app.appendChild(el("h2", { text: t.dataset + ", profile " + t.profile }));
    if (ranked.length) {
      app.appendChild(el("h3", { text: "Ranked: one row per method (its main configuration)" }));
      app.appendChild(el("p", { class: "hint", text: "Each row pools its training seeds (mean; interval over seeds, then queries); \u201c1 seed\u201d: one training run, its interval over queries only. Bars: the 95% interval (light) and the value (dark), each column on its own scale (hover a header). \u2020: not significantly different from the next ranked row on that metric (seed-aware test, p \u2265 0.05)." }));
      app.appendChild(rankedSection(t, ranked, pairsByRank));
      if (state.selected && ranked.indexOf(state.selected) >= 0) app.appendChild(detailsPanel(state.selected));
    }
    if (ranked.length > 1) {
      app.appendChild(el("h3", { text: "Each method against the best" }));
      app.appendChild(testTable("vs-best", ranked.slice(1), "vs_best", ranked[0].label));
    }
    if (variants.length) {
      app.appendChild(el("h3", { text: "Per-method configurations (ablations, variants, second stages, recipes)" }));
      app.appendChild(el("p", { class: "hint", text: "Each against its method's main row (the ranked one), with the same test." }));
      app.appendChild(testTable("variants", variants, "vs_main", null));
      if (state.selected && variants.indexOf(state.selected) >= 0) app.appendChild(detailsPanel(state.selected));
    }
    if (t.pairs.length) {
      app.appendChild(el("h3", { text: "Paired comparisons" }));
      app.appendChild(el("p", { class: "hint", text: "Each ranked row against the next, on the same queries. Test: " + DATA.test + "." }));
      app.appendChild(pairsSection(t, ranked));
    }
    app.appendChild(compareSection(t));
    if (t.rows.some(function (r) { return r.curve && r.curve.length; })) {
      app.appendChild(el("h3", { text: "Rank-k curves" }));
      app.appendChild(el("p", { class: "hint", text: "Tick rows to draw them; the top 8 ranked rows are drawn first." }));
      app.appendChild(curveChart(t));
    }
    if (t.rows.some(function (r) { return r.breakdowns && Object.keys(r.breakdowns).length; })) {
      app.appendChild(el("h3", { text: "Per-attribute breakdowns" }));
      app.appendChild(breakdownSection(t));
    }
    if (analysis.length) {
      app.appendChild(el("h3", { text: "Analysis (not ranked)" }));
      app.appendChild(el("p", { class: "hint", text: "Untrained controls, test-time oracles, other runs' weights, dirty or partial runs." }));
      var acols = [{ key: "label", label: "Method", value: function (r) { return r.label.toLowerCase(); }, cell: methodCell }].concat(metricColumns(t, {}, analysis));
      app.appendChild(sortableTable("analysis", analysis, acols, select));
      if (state.selected && analysis.indexOf(state.selected) >= 0) app.appendChild(detailsPanel(state.selected));
    }
    if (reported.length) {
      app.appendChild(el("h3", { text: "Reported (published numbers, not re-scored)" }));
      var rcols = [{ key: "label", label: "Method", value: function (r) { return r.label.toLowerCase(); }, cell: methodCell }]
        .concat(metricColumns(t, {}, reported))
        .concat([{ key: "note", label: "Source", value: function (r) { return r.note; }, cell: function (r) { return el("td", { text: r.note }); } }]);
      app.appendChild(sortableTable("reported", reported, rcols, function () {}));
    }
  }

  function renderAndShow() {
    render();
    var d = document.getElementById("details");
    if (d && d.scrollIntoView) d.scrollIntoView({ block: "nearest" });
  }
  window.addEventListener("hashchange", function () { state.selected = null; render(); });
  render();
})();
