// pytest-flops HTML report: the table, the totals and the icicle chart, drawn from the JSON in #flops-data.
// No library, nothing fetched. State (selected test, metric, zoom, view) lives in the URL hash, so a link
// (report.html#test=3&metric=params&zoom=layer1) opens the same picture.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("flops-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var METRIC = {};
  D.metrics.forEach(function (m) { METRIC[m.key] = m; });
  var state = { sort: null, dir: 1, filter: "", sel: 0, metric: "flops", zoom: "", view: "size" };
  var ROW_H = 23;

  // -- formatting -----------------------------------------------------------------------------------------
  function si(n, unit) {
    if (n === null || n === undefined || n === "") return "-";
    var sign = n < 0 ? "-" : "", a = Math.abs(n);
    var scales = [["P", 1e15], ["T", 1e12], ["G", 1e9], ["M", 1e6], ["K", 1e3]];
    for (var i = 0; i < scales.length; i++) {
      if (a >= scales[i][1]) {
        var s = scales[i], v = a / s[1];
        if (i > 0 && Math.round(v * 100) / 100 >= 1000) { s = scales[i - 1]; v = a / s[1]; }
        return sign + v.toFixed(2) + (unit ? " " + s[0] + unit : s[0]);
      }
    }
    var text = sign + (Number.isInteger(a) ? String(a) : a.toPrecision(3));
    return unit ? text + " " + unit : text;
  }
  function fmt(key, n) {
    var m = METRIC[key];
    var unit = m ? m.unit : (key === "macs" ? "MACs" : "");
    return si(n, key === "flops" || key === "macs" ? "" : unit);
  }
  function pct(part, whole) { return whole ? (100 * part / whole).toFixed(1) + "%" : "-"; }
  function signedPct(old, now) {
    if (old === null || old === undefined) return "new";
    if (!old) return now ? "new" : "=";
    var p = 100 * (now - old) / old;
    return (p >= 0 ? "+" : "") + p.toFixed(1) + "%";
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "cls") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function hash(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return h >>> 0;
  }
  function typeColour(type) {
    var h = hash(type || "module");
    return "hsl(" + (h % 360) + "," + (48 + (h >> 9) % 22) + "%," + (72 + (h >> 17) % 10) + "%)";
  }

  // -- module trees -----------------------------------------------------------------------------------------
  // Each node: [name below parent, type index, [values], children...] -> {q, name, type, v, kids, parent, pre}
  var treeCache = {};
  function tree(row) {
    if (treeCache[row.tree]) return treeCache[row.tree];
    var pre = 0;
    function walk(raw, parent) {
      var q = !parent ? raw[0] : (parent.parent ? parent.q + "." + raw[0] : raw[0]);
      var node = { q: q, name: raw[0], type: D.types[raw[1]] || "", v: raw[2], kids: [], parent: parent, pre: pre++ };
      for (var i = 3; i < raw.length; i++) node.kids.push(walk(raw[i], node));
      return node;
    }
    var root = walk(D.trees[row.tree], null);
    var byName = {};
    (function index(n) { byName[n.q] = n; n.kids.forEach(index); })(root);
    return (treeCache[row.tree] = { root: root, byName: byName });
  }
  function value(node, row, key) { var i = row.metrics.indexOf(key); return i < 0 ? 0 : node.v[i] || 0; }
  function own(node, row, key) {
    var v = value(node, row, key);
    node.kids.forEach(function (k) { v -= value(k, row, key); });
    return Math.max(0, v);
  }

  // -- table ------------------------------------------------------------------------------------------------
  function usageCell(row) {
    var td = el("td", { cls: "num" });
    if (row.usage === null || row.usage === undefined) { td.textContent = "-"; return td; }
    var u = row.usage === "inf" ? Infinity : row.usage;
    var box = el("span", { cls: "use" + (u > 1 || row.over ? " over" : "") });
    var bar = el("i");
    bar.style.width = Math.min(100, 100 * u) + "%";
    box.appendChild(bar);
    box.appendChild(el("b", {}, u === Infinity ? "\u221e" : (100 * u).toFixed(1) + "%"));
    td.appendChild(box);
    return td;
  }
  var hasWorker = D.rows.some(function (r) { return r.worker; });
  var hasRank = D.rows.some(function (r) { return r.rank !== null && r.rank !== undefined; });
  var hasDelta = D.rows.some(function (r) { return r.delta; });
  var hasRate = D.rows.some(function (r) { return r.rate; });
  var hasBudget = D.rows.some(function (r) { return r.budget; });
  var COLS = [{ key: "test", label: "test", sort: function (r) { return r.test; },
                cell: function (r) { var td = el("td", { cls: "test", title: r.test }); td.appendChild(el("span", {}, r.test)); return td; } },
              { key: "model", label: "model", sort: function (r) { return r.model; } }];
  function numCol(key, label) {
    return { key: key, label: label, num: true, sort: function (r) { return r.v[key]; },
             cell: function (r) { return el("td", { cls: "num", title: String(r.v[key] === undefined ? "" : r.v[key]) }, fmt(key, r.v[key])); } };
  }
  COLS.push(numCol("flops", "FLOPs"));
  D.columns.forEach(function (c) { COLS.push(numCol(c.key, c.label)); });
  D.metrics.forEach(function (m) { if (m.key !== "flops") COLS.push(numCol(m.key, m.label)); });
  if (hasRate) COLS.push({ key: "rate", label: "FLOP/s", num: true, sort: function (r) { return r.rate; },
                           cell: function (r) { return el("td", { cls: "num" }, si(r.rate)); } });
  if (hasBudget) {
    COLS.push({ key: "budget", label: "budget", sort: function (r) { return r.budget; } });
    COLS.push({ key: "usage", label: "use", num: true, cell: usageCell,
                sort: function (r) { return r.usage === "inf" ? Infinity : r.usage; } });
  }
  if (hasDelta) COLS.push({ key: "delta", label: "vs baseline", num: true,
    sort: function (r) { var c = r.delta && r.delta.changes && r.delta.changes.flops; return c && c.old ? (c.new - c.old) / c.old : (r.delta ? 0 : null); },
    cell: function (r) { return el("td", { cls: "num d-" + (r.delta ? r.delta.status : "") }, r.delta ? r.delta.text : "-"); } });
  COLS.push({ key: "outcome", label: "outcome", sort: function (r) { return r.outcome; },
              cell: function (r) { var td = el("td"); td.appendChild(el("span", { cls: "badge o-" + r.outcome }, r.outcome || "-")); return td; } });
  if (hasWorker) COLS.push({ key: "worker", label: "worker", sort: function (r) { return r.worker; } });
  if (hasRank) COLS.push({ key: "rank", label: "rank", num: true, sort: function (r) { return r.rank; } });

  var trs = [];
  function buildTable() {
    var head = el("tr");
    COLS.forEach(function (c) {
      var th = el("th", { cls: c.num ? "num" : "", "data-col": c.key, scope: "col" }, c.label);
      th.addEventListener("click", function () { sortBy(c.key); });
      head.appendChild(th);
    });
    $("tests").tHead.appendChild(head);
    var body = $("tests").tBodies[0];
    D.rows.forEach(function (r, i) {
      var tr = el("tr", { "data-row": i, "data-nodeid": r.nodeid });
      COLS.forEach(function (c) {
        tr.appendChild(c.cell ? c.cell(r) : el("td", { cls: c.num ? "num" : "" }, c.sort(r) === null || c.sort(r) === undefined ? "-" : c.sort(r)));
      });
      tr.addEventListener("click", function () { select(i); });
      trs.push(tr);
      body.appendChild(tr);
    });
    var foot = el("tr");
    COLS.forEach(function (c) {
      var text = "";
      if (c.key === "test") text = "total (" + D.rows.length + " measurements)";
      else if (c.key === "flops" || c.key === "macs") text = fmt(c.key, D.rows.reduce(function (s, r) { return s + (r.v[c.key] || 0); }, 0));
      foot.appendChild(el("td", { cls: c.num ? "num" : "" }, text));
    });
    $("tests").tFoot.appendChild(foot);
  }
  function sortBy(key) {
    state.dir = state.sort === key ? -state.dir : (key === "test" || key === "model" ? 1 : -1);
    state.sort = key;
    applySort();
  }
  function applySort() {
    var col = COLS.filter(function (c) { return c.key === state.sort; })[0];
    document.querySelectorAll("#tests th").forEach(function (th) {
      if (th.getAttribute("data-col") === state.sort) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    var order = D.rows.map(function (r, i) { return i; });
    if (col) {
      order.sort(function (a, b) {
        var x = col.sort(D.rows[a]), y = col.sort(D.rows[b]);
        var xn = x === null || x === undefined, yn = y === null || y === undefined;
        if (xn || yn) return xn === yn ? a - b : (xn ? 1 : -1);  // blanks last, either direction
        if (x < y) return -state.dir;
        if (x > y) return state.dir;
        return a - b;
      });
    }
    var body = $("tests").tBodies[0];
    order.forEach(function (i) { body.appendChild(trs[i]); });
  }
  function applyFilter() {
    var words = state.filter.toLowerCase().split(/\s+/).filter(Boolean), shown = 0;
    D.rows.forEach(function (r, i) {
      var text = (r.test + " " + r.model + " " + r.outcome + " " + (r.worker || "")).toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      trs[i].hidden = !ok;
      if (ok) shown++;
    });
    $("shown").textContent = shown === D.rows.length ? D.rows.length + " measurements" : shown + " of " + D.rows.length + " measurements shown";
  }

  // -- header, totals, environment ---------------------------------------------------------------------------
  function card(label, text, bad) {
    var c = el("div", { cls: "card" + (bad ? " bad" : "") });
    c.appendChild(el("div", { cls: "k" }, label));
    c.appendChild(el("div", { cls: "v" }, text));
    $("cards").appendChild(c);
  }
  function buildHeader() {
    var tests = {}, failed = {}, sums = { flops: 0, macs: 0 };
    D.rows.forEach(function (r) {
      tests[r.nodeid] = 1;
      if (r.outcome === "failed") failed[r.nodeid] = 1;
      sums.flops += r.v.flops || 0; sums.macs += r.v.macs || 0;
    });
    var env = D.environment || {};
    $("subtitle").textContent = [D.created, env.pytest_flops ? "pytest-flops " + env.pytest_flops : "",
                                 env.torch ? "torch " + env.torch : ""].filter(Boolean).join(" \u00b7 ");
    if (D.incomplete) card("incomplete run", D.incomplete, true);
    card("tests", Object.keys(tests).length);
    card("measurements", D.rows.length);
    card("FLOPs", si(sums.flops));
    if (sums.macs) card("MACs", si(sums.macs));
    card("failed", Object.keys(failed).length, Object.keys(failed).length > 0);
    if (D.baseline) card("vs baseline", D.baseline, /regressed/.test(D.baseline) && !/\b0 regressed/.test(D.baseline));
    var devices = {};
    D.rows.forEach(function (r) { r.devices.forEach(function (d) { devices[d] = 1; }); });
    var t = el("table"), items = [["pytest-flops", env.pytest_flops], ["torch", env.torch], ["pytest", env.pytest],
      ["python", env.python && (env.python + " (" + (env.implementation || "") + ")")], ["platform", env.platform],
      ["machine", env.machine], ["devices", Object.keys(devices).sort().join(", ")], ["git commit", env.git_commit]];
    Object.keys(D.settings || {}).forEach(function (k) {
      var v = D.settings[k];
      if (v !== null && v !== undefined && v !== "" && v !== false) items.push(["setting " + k, String(v)]);
    });
    items.forEach(function (kv) {
      if (!kv[1]) return;
      var tr = el("tr"); tr.appendChild(el("td", {}, kv[0])); tr.appendChild(el("td", {}, kv[1])); t.appendChild(tr);
    });
    $("env").appendChild(el("div", {}, "Environment"));
    $("env").appendChild(t);
  }

  // -- the chart --------------------------------------------------------------------------------------------
  var tip = $("tip");
  function showTip(ev, html) {
    tip.textContent = "";
    html.forEach(function (line) { tip.appendChild(line); });
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = Math.max(8, ev.clientX - w - 14);
    if (y + h > window.innerHeight - 8) y = Math.max(8, ev.clientY - h - 14);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }
  function oldOf(row, node) {
    var d = row.delta;
    if (!d || !d.old) return undefined;
    if (!d.nodes) return value(node, row, "flops");  // unchanged against the baseline
    var v = d.nodes[node.pre];
    return v === null ? undefined : v;
  }
  function diffColour(row, node, rootValue) {
    var now = value(node, row, "flops"), old = oldOf(row, node);
    if (old === undefined) return now >= 0.001 * rootValue ? "rgb(232,116,104)" : null;
    if (old === now) return "#e3e6ea";
    var p = old ? Math.min(1, Math.abs(now - old) / old / 0.25) : 1;
    return now > old ? "rgb(" + Math.round(250 - 30 * p) + "," + Math.round(210 - 120 * p) + "," + Math.round(200 - 110 * p) + ")"
                     : "rgb(" + Math.round(205 - 100 * p) + "," + Math.round(235 - 40 * p) + "," + Math.round(205 - 90 * p) + ")";
  }
  function tipLines(row, node, key, zoomValue) {
    var lines = [el("div", { cls: "q" }, node.q)];
    lines.push(el("div", { cls: "t" }, node.type || "module"));
    var m = METRIC[key], total = value(tree(row).root, row, key), v = value(node, row, key);
    lines.push(el("div", {}, m.label + ": " + fmt(key, v) + (m.unit && key !== "flops" ? "" : (key === "flops" ? " FLOPs" : "")) +
                  " \u00b7 " + pct(v, total) + " of the test" + (zoomValue !== total ? ", " + pct(v, zoomValue) + " of the zoomed module" : "")));
    if (m.additive) lines.push(el("div", {}, "own (children excluded): " + fmt(key, own(node, row, key)) + " \u00b7 " + pct(own(node, row, key), total)));
    if (state.view === "diff") {
      var old = oldOf(row, node), now = value(node, row, "flops");
      lines.push(el("div", {}, old === undefined ? "baseline: not recorded (new, or under 0.1% there)" :
                    "baseline FLOPs: " + si(old) + " \u2192 " + si(now) + " (" + signedPct(old, now) + ")"));
    }
    return lines;
  }
  function drawChart(box, row) {
    var t = tree(row), key = state.view === "diff" ? "flops" : state.metric;
    var zoomed = t.byName[state.zoom] || t.root;
    var chain = [];
    for (var a = zoomed.parent; a; a = a.parent) chain.unshift(a);
    var width = box.clientWidth || 1000, rootTotal = value(t.root, row, key), zoomValue = value(zoomed, row, key);
    var nodes = [], depthMax = 0;
    chain.forEach(function (n, i) { nodes.push({ n: n, x: 0, w: 1, d: i, anc: true }); });
    (function layout(n, x, w, d) {
      nodes.push({ n: n, x: x, w: w, d: d });
      depthMax = Math.max(depthMax, d);
      var total = value(n, row, key), sum = 0;
      n.kids.forEach(function (k) { sum += value(k, row, key); });
      var scale = total > 0 ? w / Math.max(total, sum) : 0, cx = x;  // children larger than their parent: scaled down
      n.kids.forEach(function (k) {
        var kw = value(k, row, key) * scale;
        if (kw * width >= 1) layout(k, cx, kw, d + 1);
        cx += kw;
      });
    })(zoomed, 0, zoomValue > 0 ? 1 : 0, chain.length);
    box.textContent = "";
    box.style.height = (depthMax + 1) * ROW_H + "px";
    nodes.forEach(function (it) {
      if (it.w <= 0) return;
      var div = el("div", { cls: "node" + (it.anc ? " anc" : ""), "data-q": it.n.q, "data-value": value(it.n, row, key) });
      div.style.left = (100 * it.x) + "%";
      div.style.width = "calc(" + (100 * it.w) + "% - 1px)";
      div.style.top = it.d * ROW_H + "px";
      var colour = state.view === "diff" ? diffColour(row, it.n, rootTotal) : typeColour(it.n.type);
      if (colour === null) { div.classList.add("unknown"); colour = "#eceef1"; }
      div.style.background = colour;
      if (it.w * width > 30) {
        div.textContent = it.n.q === t.root.q || it.anc ? it.n.q : it.n.name;
        if (it.n.type && it.n.type !== it.n.name) div.appendChild(el("small", {}, " " + it.n.type));
      }
      div.addEventListener("mousemove", function (ev) { showTip(ev, tipLines(row, it.n, key, zoomValue)); });
      div.addEventListener("mouseleave", hideTip);
      div.addEventListener("click", function () { hideTip(); zoomTo(it.n === zoomed && it.n.parent ? it.n.parent.q : it.n.q); });
      box.appendChild(div);
    });
  }
  function topModules(row, key, n) {
    var t = tree(row), all = [];
    (function walk(x) { all.push(x); x.kids.forEach(walk); })(t.root);
    var m = METRIC[key], by = m.additive ? function (x) { return own(x, row, key); } : function (x) { return value(x, row, key); };
    return all.map(function (x) { return [x, by(x)]; }).filter(function (p) { return p[1] > 0 && (m.additive || p[0] !== t.root); })
              .sort(function (a, b) { return b[1] - a[1] || a[0].pre - b[0].pre; }).slice(0, n);
  }
  function smallTable(title, headers, rows) {
    var wrap = el("div");
    wrap.appendChild(el("h3", {}, title));
    var t = el("table"), h = el("tr");
    headers.forEach(function (x, i) { h.appendChild(el("th", { cls: i >= 2 ? "num" : "" }, x)); });
    t.appendChild(h);
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (x, i) { tr.appendChild(el("td", { cls: i >= 2 ? "num" : "" }, x)); });
      t.appendChild(tr);
    });
    wrap.appendChild(t);
    return wrap;
  }
  function segmented(label, items, current, onPick) {
    var wrap = el("span"), seg = el("span", { cls: "seg", role: "group", "aria-label": label });
    wrap.appendChild(el("span", { cls: "facts" }, label + " "));
    items.forEach(function (it) {
      var b = el("button", { type: "button", "data-choice": it[0], "aria-pressed": String(it[0] === current) }, it[1]);
      b.addEventListener("click", function () { onPick(it[0]); });
      seg.appendChild(b);
    });
    wrap.appendChild(seg);
    return wrap;
  }
  function facts(row) {
    var f = el("div", { cls: "facts" }), parts = [["model", row.model], ["FLOPs", si(row.v.flops)]];
    if (row.backward) parts.push(["forward / backward", si(row.forward) + " / " + si(row.backward)]);
    if (row.v.macs !== undefined) parts.push(["MACs", si(row.v.macs)]);
    parts.push(["params", si(row.v.params)]);
    D.metrics.forEach(function (m) { if (m.key !== "flops" && m.key !== "params" && row.v[m.key] !== undefined) parts.push([m.label, fmt(m.key, row.v[m.key])]); });
    if (row.budget) parts.push(["budget", row.budget + (row.usage !== null ? " (" + (row.usage === "inf" ? "\u221e" : (100 * row.usage).toFixed(1) + "%") + " used)" : "")]);
    if (row.delta) parts.push(["vs baseline", row.delta.text + " (" + row.delta.status + ")"]);
    parts.push(["outcome", row.outcome || "-"]);
    if (row.devices.length) parts.push(["on", row.devices.join(", ")]);
    if (row.worker) parts.push(["worker", row.worker]);
    if (row.rank !== null && row.rank !== undefined) parts.push(["rank", row.rank]);
    parts.forEach(function (p, i) {
      if (i) f.appendChild(document.createTextNode(" \u00b7 "));
      f.appendChild(document.createTextNode(p[0] + " "));
      f.appendChild(el("b", {}, p[1]));
    });
    return f;
  }
  function renderDetail() {
    var row = D.rows[state.sel], box = $("detail");
    trs.forEach(function (tr, i) { tr.classList.toggle("sel", i === state.sel); });
    if (!row) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = "";
    box.setAttribute("data-row", state.sel);
    box.appendChild(el("h2", { id: "detail-title" }, row.test));
    box.appendChild(facts(row));
    if (Object.keys(row.uncounted).length) {
      box.appendChild(el("div", { cls: "warn" }, "uncounted ops (no formula, counted as 0): " +
        Object.keys(row.uncounted).sort().map(function (k) { return k + " x" + row.uncounted[k]; }).join(", ")));
    }
    if (row.metrics.indexOf(state.metric) < 0) state.metric = "flops";
    var controls = el("div", { cls: "controls" });
    controls.appendChild(segmented("size by", row.metrics.map(function (k) { return [k, METRIC[k] ? METRIC[k].label : k]; }),
                                   state.view === "diff" ? "" : state.metric, function (k) { state.metric = k; state.view = "size"; update(); }));
    controls.lastChild.querySelectorAll("button").forEach(function (b) { b.setAttribute("data-metric", b.getAttribute("data-choice")); });
    if (row.delta && row.delta.old) {
      controls.appendChild(segmented("colour", [["size", "by module type"], ["diff", "by change vs baseline"]], state.view,
                                     function (v) { state.view = v; update(); }));
    }
    box.appendChild(controls);
    var t = tree(row), zoomed = t.byName[state.zoom] || t.root, crumbs = el("div", { cls: "crumbs", id: "crumbs" });
    var path = [];
    for (var a = zoomed; a; a = a.parent) path.unshift(a);
    path.forEach(function (n, i) {
      if (i) crumbs.appendChild(document.createTextNode(" \u203a "));
      var link = el(i === path.length - 1 ? "span" : "a", { "data-q": n.q }, n.q);
      if (i < path.length - 1) link.addEventListener("click", function () { zoomTo(n.q); });
      crumbs.appendChild(link);
    });
    crumbs.appendChild(el("span", {}, "  (click a module to zoom in, the top bar or a name here to zoom out)"));
    box.appendChild(crumbs);
    var chart = el("div", { cls: "chart", id: "chart", "data-metric": state.view === "diff" ? "flops" : state.metric, "data-zoom": zoomed.q });
    box.appendChild(chart);
    drawChart(chart, row);
    if (state.view === "diff") {
      var lg = el("div", { cls: "legend" });
      [["#e07a6a", "grew"], ["#79b98a", "shrank"], ["#e3e6ea", "unchanged"], ["#eceef1", "not in the baseline (under 0.1%)"]].forEach(function (x) {
        var s = el("span"); s.style.background = x[0]; lg.appendChild(s); lg.appendChild(document.createTextNode(x[1]));
      });
      box.appendChild(lg);
    }
    var cols = el("div", { cls: "cols2" }), key = state.view === "diff" ? "flops" : state.metric, m = METRIC[key];
    var total = value(t.root, row, key);
    cols.appendChild(smallTable("top modules by " + m.label + (m.additive ? " (own, children excluded)" : ""), ["module", "type", m.label, "share"],
      topModules(row, key, 10).map(function (p) { return [p[0].q, p[0].type, fmt(key, p[1]), pct(p[1], total)]; })));
    if (row.delta && row.delta.modules && row.delta.modules.length) {
      cols.appendChild(smallTable("modules whose FLOPs changed most (baseline \u2192 now)", ["module", "type", "baseline", "now", "change"],
        row.delta.modules.slice(0, 10).map(function (c) {
          return [c.module, c.type || "", c.old === null ? "-" : si(c.old), c.new === null ? "-" : si(c.new), signedPct(c.old, c.new || 0)];
        })));
    }
    box.appendChild(cols);
  }

  // -- state <-> URL hash -----------------------------------------------------------------------------------
  function readHash() {
    var h = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) h[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    if (h.test !== undefined && D.rows[+h.test]) state.sel = +h.test;
    if (h.metric) state.metric = h.metric;
    state.zoom = h.zoom || "";
    state.view = h.view === "diff" ? "diff" : "size";
    if (h.sort) { state.sort = h.sort.replace(/^-/, ""); state.dir = h.sort[0] === "-" ? -1 : 1; }
    if (h.filter !== undefined) { state.filter = h.filter; $("filter").value = h.filter; }
  }
  function writeHash() {
    var parts = ["test=" + state.sel];
    if (state.metric !== "flops") parts.push("metric=" + encodeURIComponent(state.metric));
    if (state.zoom) parts.push("zoom=" + encodeURIComponent(state.zoom));
    if (state.view !== "size") parts.push("view=" + state.view);
    if (state.sort) parts.push("sort=" + (state.dir < 0 ? "-" : "") + state.sort);
    if (state.filter) parts.push("filter=" + encodeURIComponent(state.filter));
    var text = "#" + parts.join("&");
    if (location.hash !== text) history.replaceState(null, "", text);
  }
  function update() { writeHash(); renderDetail(); }
  function select(i) { if (state.sel !== i) { state.sel = i; state.zoom = ""; } update(); }
  function zoomTo(q) { state.zoom = q === tree(D.rows[state.sel]).root.q ? "" : q; update(); }

  buildHeader();
  buildTable();
  readHash();
  applySort();
  applyFilter();
  $("filter").addEventListener("input", function () { state.filter = this.value; applyFilter(); writeHash(); });
  window.addEventListener("hashchange", function () { readHash(); applySort(); applyFilter(); renderDetail(); });
  var resizeTimer = null;
  window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(renderDetail, 100); });
  if (!D.rows.length) $("shown").textContent = "no measurements";
  renderDetail();
  document.documentElement.setAttribute("data-ready", "1");
  window.flopsReport = { state: state, select: select, zoomTo: zoomTo, update: update, data: D };
})();
