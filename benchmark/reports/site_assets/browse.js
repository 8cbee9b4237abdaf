/* Per-query browser: renders window.LPR_BROWSE (data.js). Filters by attribute and outcome;
   #q=<query id> shows one query. No network, no libraries. */
(function () {
  "use strict";
  var D = window.LPR_BROWSE || { queries: [], attributes: [] };
  var PAGE = 50;
  var state = { attrs: {}, outcome: "all", page: 0 };
  var app = document.getElementById("app"), filters = document.getElementById("filters");

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k]; else if (k === "class") node.className = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  var OUTCOMES = [["all", "all queries"], ["a-right", "A right at rank 1"], ["a-wrong", "A wrong at rank 1"]];
  if (D.b) OUTCOMES.push(["a-right-b-wrong", "A right, B wrong"], ["a-wrong-b-right", "A wrong, B right"]);
  function keep(q) {
    for (var k in state.attrs) if (state.attrs[k] && q.attributes[k] !== state.attrs[k]) return false;
    switch (state.outcome) {
      case "a-right": return q.a;
      case "a-wrong": return !q.a;
      case "a-right-b-wrong": return q.a && !q.b;
      case "a-wrong-b-right": return !q.a && q.b;
      default: return true;
    }
  }

  function buildFilters() {
    var sel = el("select", { id: "outcome" });
    OUTCOMES.forEach(function (o) { sel.appendChild(el("option", { value: o[0], text: o[1] })); });
    sel.addEventListener("change", function () { state.outcome = sel.value; state.page = 0; location.hash = ""; render(); });
    filters.appendChild(el("span", { text: "A = " + D.a + (D.b ? ", B = " + D.b : "") + ". Show" }));
    filters.appendChild(sel);
    D.attributes.forEach(function (a) {
      var values = {};
      D.queries.forEach(function (q) { if (q.attributes[a] !== undefined) values[q.attributes[a]] = true; });
      var s = el("select", { id: "attr-" + a, "data-attr": a }, [el("option", { value: "", text: a + ": any" })]);
      Object.keys(values).sort().forEach(function (v) { s.appendChild(el("option", { value: v, text: a + ": " + v })); });
      s.addEventListener("change", function () { state.attrs[a] = s.value; state.page = 0; location.hash = ""; render(); });
      filters.appendChild(s);
    });
  }

  function figure(item, cls) {
    var fig = el("figure", { class: cls, title: item.id + (item.title ? " \u2014 " + item.title : "") + (item.hit ? " (ground truth)" : "") });
    fig.appendChild(item.thumb ? el("img", { src: item.thumb, alt: item.id, loading: "lazy" }) : el("div", { class: "none", text: "no image" }));
    fig.appendChild(el("figcaption", { text: item.id }));
    return fig;
  }

  function card(q) {
    var tags = [el("a", { href: "#q=" + encodeURIComponent(q.id), text: q.id }),
      el("span", { class: "tag " + (q.a ? "ok" : "bad"), text: "A " + (q.a ? "right" : "wrong") + " at rank 1" })];
    if (D.b) tags.push(el("span", { class: "tag " + (q.b ? "ok" : "bad"), text: "B " + (q.b ? "right" : "wrong") + " at rank 1" }));
    Object.keys(q.attributes).sort().forEach(function (k) { tags.push(el("span", { class: "tag", text: k + ": " + q.attributes[k] })); });
    if (q.missing) tags.push(el("span", { class: "tag bad", text: "clip missing: a miss" }));
    var frames = el("div", { class: "thumbs" }, q.frames.length ? q.frames.map(function (f, i) {
      return el("figure", {}, [el("img", { src: f, alt: "frame " + (i + 1), loading: "lazy" }), el("figcaption", { text: "frame " + (i + 1) })]);
    }) : [el("figure", {}, [el("div", { class: "none", text: "no frames" })])]);
    var gt = el("div", { class: "thumbs" }, q.gt.map(function (g) { return figure(g, "hit"); }));
    function ranking(list) {
      return el("div", { class: "thumbs" }, list.length ? list.map(function (g, i) {
        var f = figure(g, g.hit ? "hit" : "miss");
        f.querySelector("figcaption").textContent = (i + 1) + ". " + (g.hit ? "\u2713 " : "") + g.id;
        return f;
      }) : [el("figure", {}, [el("div", { class: "none", text: "no ranking" })])]);
    }
    var strip = el("div", { class: "strip" }, [
      el("section", {}, [el("span", { class: "label", text: "query frames" }), frames]),
      el("section", {}, [el("span", { class: "label", text: "ground truth" }), gt]),
      el("section", {}, [el("span", { class: "label", text: "A's top " + D.top + " (green: a hit)" }), ranking(q.top)])]);
    if (D.b) strip.appendChild(el("section", {}, [el("span", { class: "label", text: "B's top " + D.top }), ranking(q.top_b || [])]));
    var box = el("article", { class: "query", id: "q-" + q.id }, [el("h3", {}, tags), strip]);
    if (q.asr) box.appendChild(el("p", { class: "hint", text: "ASR: " + q.asr }));
    return box;
  }

  function render() {
    app.textContent = "";
    var m = /^#q=(.+)$/.exec(location.hash);
    if (m) {
      var id = decodeURIComponent(m[1]);
      var one = D.queries.filter(function (q) { return q.id === id; });
      app.appendChild(el("p", {}, [el("a", { href: "#", text: "\u2190 all queries" })]));
      app.appendChild(one.length ? card(one[0]) : el("p", { text: "No query " + id + " on this page." }));
      return;
    }
    var shown = D.queries.filter(keep);
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    app.appendChild(el("p", { class: "count", id: "count", text: shown.length + " of " + D.shown + " queries" +
      (D.shown < D.num_queries ? " (the first " + D.shown + " of " + D.num_queries + " were generated)" : "") }));
    var pager = el("div", { class: "pager" });
    var prev = el("button", { type: "button", text: "\u2190 previous" }), next = el("button", { type: "button", text: "next \u2192" });
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    prev.addEventListener("click", function () { state.page--; render(); });
    next.addEventListener("click", function () { state.page++; render(); });
    pager.appendChild(prev); pager.appendChild(el("span", { text: "page " + (state.page + 1) + " of " + pages })); pager.appendChild(next);
    app.appendChild(pager);
    shown.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (q) { app.appendChild(card(q)); });
  }

  buildFilters();
  window.addEventListener("hashchange", render);
  render();
})();
