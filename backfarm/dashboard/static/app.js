/* backfarm dashboard: tables and charts over the result store.
 *
 * Two modes, one code path:
 * - live (served by `backfarm dashboard`): every panel polls the read-only JSON endpoints under /api/;
 * - report (`backfarm report`): the data sits in <script id="backfarm-data" type="application/json"> and
 *   sorting and filtering happen here; nothing is fetched.
 * Stored artifacts (equity curve, trades) arrive as base64 columns, decoded by codec.js (loaded first).
 * Every string from the store is inserted with textContent, never as HTML.
 */
(function () {
  "use strict";

  const { EXIT_REASONS, decodeEquity, decodeTrades, drawdown, interpolate } = window.backfarmCodec;
  const BOARD_METRICS = ["total_return", "sharpe", "max_drawdown", "trades", "win_rate", "profit_factor"];
  const LABELS = { total_return: "return", max_drawdown: "max dd", win_rate: "win rate", profit_factor: "profit f.",
    avg_trade: "avg trade", fees_paid: "fees", volatility: "vol" };
  const SIGNED = ["total_return", "cagr", "avg_trade", "max_drawdown"];
  const COMPARE_ROWS = 10;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#1e40af",
    "#92400e"];

  const dataNode = document.getElementById("backfarm-data");
  const REPORT = dataNode ? JSON.parse(dataNode.textContent) : null;

  const state = { sweep: "", strategy: "", symbol: "", kind: "", metric: "sharpe", ascending: null, limit: 100,
    selected: null, session: "" };
  let meta = { metrics: [], lower_is_better: [], percent: [], kinds: ["backtest", "paper"], refresh_s: 3 };
  const charts = { equity: null, drawdown: null, compare: null, paper: null };
  const seen = {};
  let board = { rows: [] };
  let compareKey = "";
  let paperKey = "";
  let busy = false;
  let again = false;

  // --- helpers -------------------------------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }

  function fmtMetric(name, v) {
    if (v === null || v === undefined) return "—";
    if (meta.percent.includes(name)) {
      const p = v * 100;
      return SIGNED.includes(name) ? (p >= 0 ? "+" : "") + p.toFixed(2) + "%" : p.toFixed(1) + "%";
    }
    if (Number.isInteger(v) && (name === "trades" || name === "wins")) return v.toLocaleString("en-US");
    return Math.abs(v) >= 100 ? v.toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 })
      : v.toFixed(3);
  }

  function signClass(name, v) {
    if (v === null || v === undefined || !SIGNED.includes(name) || name === "max_drawdown") return "";
    return v > 0 ? "pos" : v < 0 ? "neg" : "";
  }

  const fmtMoney = (v) => v === null || v === undefined ? "—"
    : v.toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 });
  const fmtPrice = (v) => v.toPrecision(7).replace(/\.?0+$/, "");
  const fmtTime = (s) => s ? new Date(s * 1000).toISOString().slice(0, 16).replace("T", " ") : "—";
  const fmtParams = (p) => Object.entries(p || {}).map(([k, v]) => k + "=" + v).join(" ");

  function shortWindow(start, end) {
    const s = (start || "").slice(0, 10), e = (end || "").slice(0, 10);
    return s + "→" + (e.slice(0, 4) === s.slice(0, 4) ? e.slice(5) : e);
  }

  function isAscending(metric, ascending) {
    return ascending === null || ascending === undefined ? meta.lower_is_better.includes(metric) : ascending;
  }

  function sourceBadge(source, kind) {
    const span = el("span", {}, []);
    if (source === "synthetic") span.appendChild(el("span", { class: "badge synthetic", text: "synthetic",
      title: "generated candles, not market data" }));
    else span.appendChild(el("span", { text: source }));
    if (kind === "paper") span.appendChild(el("span", { class: "badge paper", text: "paper" }));
    return span;
  }

  function changed(name, value) {
    const key = JSON.stringify(value);
    if (seen[name] === key) return false;
    seen[name] = key;
    return true;
  }

  function setStatus(text, error) {
    const node = $("#status");
    node.textContent = text;
    node.classList.toggle("error", !!error);
  }

  // --- data sources ---------------------------------------------------------------------------------------------

  async function getJSON(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) query.set(k, v);
    const qs = query.toString();
    const response = await fetch(path + (qs ? "?" + qs : ""), { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new Error((body && body.error) || response.status + " " + response.statusText);
    return body;
  }

  function filterParams() {
    return { sweep: state.sweep, strategy: state.strategy, symbol: state.symbol, kind: state.kind };
  }

  const live = {
    meta: () => getJSON("/api/meta"),
    sweeps: () => getJSON("/api/sweeps"),
    leaderboard: () => getJSON("/api/leaderboard", Object.assign(filterParams(), { metric: state.metric,
      order: state.ascending === null ? "best" : state.ascending ? "asc" : "desc", limit: state.limit })),
    strategies: () => getJSON("/api/strategies", filterParams()),
    paper: () => getJSON("/api/paper"),
    paperSession: (id) => getJSON("/api/paper/" + encodeURIComponent(id)),
    result: (id) => getJSON("/api/result/" + encodeURIComponent(id)),
    curves: (ids) => getJSON("/api/curves", { ids: ids.join(",") }),
  };

  function compareRows(metric, ascending) {
    return (a, b) => {
      const x = a.metrics[metric], y = b.metrics[metric];
      const nx = x === null || x === undefined, ny = y === null || y === undefined;
      if (nx !== ny) return nx ? 1 : -1;
      if (!nx && x !== y) return ascending ? x - y : y - x;
      return a.job_id < b.job_id ? -1 : a.job_id > b.job_id ? 1 : 0;
    };
  }

  const report = REPORT && {
    meta: async () => REPORT.meta,
    sweeps: async () => ({ sweeps: REPORT.sweeps, facets: REPORT.facets }),
    leaderboard: async () => {
      const asc = isAscending(state.metric, state.ascending);
      const rows = REPORT.rows.filter((r) => (!state.strategy || r.strategy === state.strategy)
        && (!state.symbol || r.symbol === state.symbol) && (!state.kind || r.kind === state.kind));
      rows.sort(compareRows(state.metric, asc));
      return { metric: state.metric, ascending: asc, rows: rows.slice(0, state.limit) };
    },
    strategies: async () => ({ rows: REPORT.strategies }),
    paper: async () => ({ rows: REPORT.paper || [], sessions: [] }),
    paperSession: async () => ({ curves: [], capital: 1 }),
    result: async (id) => {
      if (REPORT.details[id]) return REPORT.details[id];
      throw new Error("this report embeds the curves of its first " + REPORT.charts + " rows only");
    },
    curves: async (ids) => {
      const out = {};
      for (const id of ids) {
        const d = REPORT.details[id];
        if (d && d.extra && d.extra.equity) out[id] = { equity: d.extra.equity, capital: d.capital };
      }
      return { curves: out };
    },
  };

  const source = report || live;

  // --- controls -------------------------------------------------------------------------------------------------

  function fillSelect(select, values, labels) {
    const current = select.value;
    const keep = select.querySelector("option[value='']");
    select.textContent = "";
    if (keep) select.appendChild(keep);
    for (const v of values) select.appendChild(el("option", { value: v, text: labels ? labels(v) : v }));
    select.value = values.includes(current) || current === "" ? current : "";
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const key of ["sweep", "strategy", "symbol", "kind", "metric"]) if (params.has(key)) state[key] = params.get(key);
    if (state.sweep === "all") state.sweep = "";  // "all results", chosen on purpose
    if (params.has("order")) state.ascending = params.get("order") === "asc" ? true
      : params.get("order") === "desc" ? false : null;
    if (params.has("limit")) state.limit = parseInt(params.get("limit"), 10) || 100;
    if (params.has("job")) state.selected = params.get("job");
    if (params.has("session")) state.session = params.get("session");
    return params.has("sweep");
  }

  function writeHash() {
    const params = new URLSearchParams();
    params.set("sweep", state.sweep || "all");  // kept across reloads, "all results" included
    for (const key of ["strategy", "symbol", "kind"]) if (state[key]) params.set(key, state[key]);
    params.set("metric", state.metric);
    if (state.ascending !== null) params.set("order", state.ascending ? "asc" : "desc");
    params.set("limit", String(state.limit));
    if (state.selected) params.set("job", state.selected);
    if (state.session) params.set("session", state.session);
    history.replaceState(null, "", "#" + params.toString());
  }

  function syncControls() {
    for (const key of ["sweep", "strategy", "symbol", "kind", "metric", "limit"]) $("#f-" + key).value = String(state[key]);
    $("#f-order").textContent = state.ascending === null ? "best first" : state.ascending ? "ascending" : "descending";
  }

  function setFilter(key, value) {
    state[key] = value;
    if (key === "metric") state.ascending = null;
    if (key === "kind" && value === "paper" && !report) state.sweep = "";  // paper results belong to no sweep
    syncControls();
    writeHash();
    refresh();
  }

  function bindControls() {
    fillSelect($("#f-metric"), meta.metrics, (m) => LABELS[m] ? m + " (" + LABELS[m] + ")" : m);
    fillSelect($("#f-kind"), meta.kinds);
    for (const key of ["sweep", "strategy", "symbol", "kind", "metric"]) {
      $("#f-" + key).addEventListener("change", (e) => setFilter(key, e.target.value));
    }
    $("#f-limit").addEventListener("change", (e) => setFilter("limit", parseInt(e.target.value, 10)));
    $("#f-order").addEventListener("click", () => {
      state.ascending = !isAscending(state.metric, state.ascending);
      syncControls();
      writeHash();
      refresh();
    });
  }

  // --- panels ---------------------------------------------------------------------------------------------------

  function renderSweeps(data) {
    fillSelect($("#f-sweep"), data.sweeps.map((s) => s.sweep_id), (id) => id.slice(0, 12));
    fillSelect($("#f-strategy"), data.facets.strategies);
    fillSelect($("#f-symbol"), data.facets.symbols);
    syncControls();
    if (!changed("sweeps", data.sweeps)) return;
    const body = $("#sweeps tbody");
    body.textContent = "";
    $("#sweeps .empty").hidden = data.sweeps.length > 0;
    for (const s of data.sweeps) {
      const share = s.total ? s.done / s.total : 1, dead = s.total ? s.dead / s.total : 0;
      const bar = el("span", { class: "progress", title: s.done + " done, " + s.dead + " dead of " + s.total }, [
        el("span", { class: "done", style: "width:" + (share * 100).toFixed(1) + "%" }),
        el("span", { class: "dead", style: "left:" + (share * 100).toFixed(1) + "%;width:" + (dead * 100).toFixed(1)
          + "%" }),
      ]);
      const span = s.days ? s.days + "d" : shortWindow(s.start, s.end);
      const tr = el("tr", { class: "clickable" + (state.sweep === s.sweep_id ? " selected" : ""),
        "data-sweep": s.sweep_id }, [
        el("td", { text: s.sweep_id.slice(0, 12), title: s.sweep_id }),
        el("td", { text: fmtTime(s.created_at) }),
        el("td", {}, [sourceBadge(s.source)]),
        el("td", { text: s.strategies.join(", ") }),
        el("td", { text: s.symbols.join(", ") }),
        el("td", { text: (s.granularity || "") + " · " + span + (s.window ? " / " + s.window : "") }),
        el("td", { class: "num", text: s.total.toLocaleString("en-US") }),
        el("td", {}, [bar, el("span", { class: "muted", text: " " + s.done.toLocaleString("en-US")
          + (s.dead ? " · " + s.dead + " dead" : "") })]),
        el("td", { text: s.complete ? "complete" : "running / partial" }),
      ]);
      if (!report) tr.addEventListener("click", () => setFilter("sweep", state.sweep === s.sweep_id ? "" : s.sweep_id));
      body.appendChild(tr);
    }
  }

  function boardColumns() {
    // The ranking metric is always shown; one outside the usual set comes first.
    return BOARD_METRICS.includes(state.metric) ? BOARD_METRICS : [state.metric].concat(BOARD_METRICS);
  }

  function renderBoard(data) {
    board = data;
    $("#board-title").textContent = "· top " + data.rows.length + " by " + data.metric
      + (data.ascending === isAscending(data.metric, null) ? "" : " (reversed)");
    if (!changed("board", [data, state.selected])) return;
    const metrics = boardColumns();
    const head = el("tr", {}, ["#", "strategy", "params", "symbol", "window"].map((h) => el("th", { text: h })));
    for (const m of metrics) {
      const th = el("th", { class: "num sortable" + (m === data.metric ? " sorted" : ""), "data-metric": m,
        text: (LABELS[m] || m) + (m === data.metric ? (data.ascending ? " ▲" : " ▼") : ""),
        title: "rank by " + m });
      th.addEventListener("click", () => {
        if (state.metric === m) state.ascending = !isAscending(m, state.ascending);
        else { state.metric = m; state.ascending = null; }
        syncControls();
        writeHash();
        refresh();
      });
      head.appendChild(th);
    }
    head.appendChild(el("th", { text: "source" }));
    $("#board thead").replaceChildren(head);
    const body = $("#board tbody");
    body.textContent = "";
    $("#board .empty").hidden = data.rows.length > 0;
    data.rows.forEach((r, i) => {
      const tr = el("tr", { class: "clickable" + (r.job_id === state.selected ? " selected" : ""), "data-job": r.job_id }, [
        el("td", { class: "num", text: String(i + 1) }),
        el("td", { text: r.strategy_version && r.strategy_version.endsWith("+lookahead") ? `${r.strategy} (LOOKAHEAD)` : r.strategy }),
        el("td", { class: "params", text: fmtParams(r.params), title: fmtParams(r.params) }),
        el("td", { text: r.symbol + " " + r.granularity }),
        el("td", { text: shortWindow(r.start, r.end).slice(5) }),
      ]);
      for (const m of metrics) {
        const v = r.metrics[m];
        tr.appendChild(el("td", { class: "num " + signClass(m, v), "data-metric": m,
          "data-value": v === null || v === undefined ? "" : String(v), text: fmtMetric(m, v) }));
      }
      tr.appendChild(el("td", {}, [sourceBadge(r.source, r.kind)]));
      tr.addEventListener("click", () => select(r.job_id));
      body.appendChild(tr);
    });
  }

  function renderStrategies(data) {
    $("#strategies-title").textContent = report ? "· whole sweep" : "";
    if (!changed("strategies", data.rows)) return;
    const body = $("#strategies tbody");
    body.textContent = "";
    for (const r of data.rows) {
      body.appendChild(el("tr", {}, [
        el("td", { text: r.key }),
        el("td", { class: "num", text: r.results.toLocaleString("en-US") }),
        el("td", { class: "num " + signClass("total_return", r.mean_return), text: fmtMetric("total_return", r.mean_return) }),
        el("td", { class: "num", text: fmtMetric("sharpe", r.mean_sharpe) }),
        el("td", { class: "num", text: fmtMetric("max_drawdown", r.worst_drawdown) }),
        el("td", { class: "num", text: r.trades.toLocaleString("en-US") }),
        el("td", { class: "num", text: fmtMetric("win_rate", r.win_rate) }),
      ]));
    }
  }

  function renderPaper(data) {
    renderSessions(data.sessions || []);
    if (!changed("paper", [data.rows, state.selected])) return;
    const body = $("#paper-results tbody");
    body.textContent = "";
    $("#paper .results-empty").hidden = data.rows.length > 0;
    for (const r of data.rows) {
      const m = r.metrics;
      const tr = el("tr", { class: "clickable" + (r.job_id === state.selected ? " selected" : ""), "data-job": r.job_id }, [
        el("td", { text: r.strategy }),
        el("td", { class: "params", text: fmtParams(r.params) }),
        el("td", { text: r.symbol }),
        el("td", { text: r.session || "—" }),
        el("td", { text: r.granularity + " " + shortWindow(r.start, r.end) }),
        el("td", { class: "num " + signClass("total_return", m.total_return), text: fmtMetric("total_return", m.total_return) }),
        el("td", { class: "num", text: fmtMetric("sharpe", m.sharpe) }),
        el("td", { class: "num", text: fmtMetric("max_drawdown", m.max_drawdown) }),
        el("td", { class: "num", text: fmtMetric("trades", m.trades) }),
        el("td", { text: fmtTime(r.created_at) }),
      ]);
      tr.addEventListener("click", () => select(r.job_id));
      body.appendChild(tr);
    }
  }

  function renderSessions(sessions) {
    $("#paper .sessions-empty").hidden = sessions.length > 0;
    if (!state.session || !sessions.some((s) => s.session_id === state.session)) {
      const pick = sessions.find((s) => s.active) || sessions[0];
      state.session = pick ? pick.session_id : "";
    }
    if (changed("sessions", [sessions, state.session])) {
      const body = $("#paper-sessions tbody");
      body.textContent = "";
      for (const s of sessions) {
        const best = s.accounts.reduce((b, a) => a.pnl !== null && (b === null || a.pnl > b) ? a.pnl : b, null);
        const share = s.window_bars ? Math.min(1, s.bars_done / s.window_bars) : 0;
        const tr = el("tr", { class: "clickable" + (s.session_id === state.session ? " selected" : ""),
          "data-session": s.session_id }, [
          el("td", { text: s.session_id }),
          el("td", { class: "status-" + s.status, text: s.status + (s.resumes ? " (resumed " + s.resumes + "×)" : ""),
            title: s.error || "" }),
          el("td", { text: s.feed + (s.speed ? " ×" + s.speed : "") + " · " + s.granularity }),
          el("td", { text: s.strategies.join(", ") }),
          el("td", { text: s.symbols.join(", ") }),
          el("td", {}, [el("span", { class: "progress" }, [el("span", { class: "done",
            style: "width:" + (share * 100).toFixed(1) + "%" })]),
            el("span", { class: "muted", text: " " + s.bars_done + " / " + s.window_bars + " bars" })]),
          el("td", { class: "num " + (best > 0 ? "pos" : best < 0 ? "neg" : ""), text: fmtMoney(best) }),
          el("td", { text: fmtTime(s.created_at) }),
        ]);
        tr.addEventListener("click", () => { state.session = s.session_id; writeHash(); refresh(); });
        body.appendChild(tr);
      }
    }
    const current = sessions.find((s) => s.session_id === state.session);
    $("#paper-live").hidden = !current;
    if (!current) return;
    $("#paper-session-title").textContent = "session " + current.session_id + " · " + current.status
      + " · capital " + fmtMoney(current.capital) + " per account";
    if (changed("accounts", current.accounts)) {
      const body = $("#paper-accounts tbody");
      body.textContent = "";
      for (const a of current.accounts) {
        body.appendChild(el("tr", {}, [
          el("td", { text: a.account }),
          el("td", { class: "params", text: fmtParams(a.params) }),
          el("td", { class: "num", text: fmtMoney(a.equity) }),
          el("td", { class: "num " + (a.pnl > 0 ? "pos" : a.pnl < 0 ? "neg" : ""), text: fmtMoney(a.pnl) }),
          el("td", { class: "num", text: fmtMetric("total_return", a.return) }),
          el("td", { class: "num", text: String(a.trades) }),
          el("td", { class: "num", text: a.position ? fmtPrice(a.position) : "flat" }),
          el("td", { class: "num", text: a.quote_age_s === null || !current.active ? "—"
            : a.quote_age_s.toFixed(1) + " s" }),
        ]));
      }
    }
    updatePaperChart(current);
  }

  async function updatePaperChart(current) {
    const key = current.session_id + ":" + current.bars_done + ":" + current.status;
    if (key === paperKey) return;
    paperKey = key;
    const data = await source.paperSession(current.session_id);
    if (key !== paperKey) return;
    const node = $("#chart-paper");
    destroy("paper");
    node.textContent = "";
    node.setAttribute("data-points", "0");
    const lines = [];
    data.curves.forEach((c, i) => {
      if (c.ts.length) lines.push({ label: c.account, index: i, ts: c.ts, equity: c.equity, capital: data.capital });
    });
    if (!lines.length) { node.appendChild(el("p", { class: "muted", text: "no bars yet" })); return; }
    drawReturns("paper", node, lines, 240);
  }

  // --- charts ---------------------------------------------------------------------------------------------------

  function chartWidth(node) {
    return Math.max(280, Math.floor(node.clientWidth || node.parentNode.clientWidth || 600));
  }

  function destroy(name) {
    if (charts[name]) { charts[name].destroy(); charts[name] = null; }
  }

  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

  // Several equity curves as percent returns on one time axis (lines: label, index = colour, ts, equity, capital).
  function drawReturns(name, node, lines, height) {
    const tables = [], series = [{ label: "time (UTC)" }];
    for (const line of lines) {
      tables.push([line.ts, line.equity.map((e) => (e / line.capital - 1) * 100)]);
      series.push({ label: line.label, stroke: COLORS[line.index % COLORS.length], width: 1.2, spanGaps: true,
        value: (u, v) => v === null ? "—" : v.toFixed(2) + "%" });
    }
    const joined = tables.length === 1 ? tables[0] : uPlot.join(tables);
    charts[name] = new uPlot({
      width: chartWidth(node), height: height, tzDate: utc, legend: { show: true, live: false },
      scales: { x: { time: true } }, series: series,
      axes: [{}, { size: 60, values: (u, vals) => vals.map((v) => v.toFixed(1) + "%") }],
    }, joined, node);
    node.setAttribute("data-points", String(joined[0].length));
  }

  function triangle(ctx, x, y, up, color, size) {
    ctx.beginPath();
    if (up) { ctx.moveTo(x, y - size); ctx.lineTo(x - size, y + size * 0.8); ctx.lineTo(x + size, y + size * 0.8); }
    else { ctx.moveTo(x, y + size); ctx.lineTo(x - size, y - size * 0.8); ctx.lineTo(x + size, y - size * 0.8); }
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.fill();
  }

  function markersPlugin(markers) {
    return { hooks: { draw: [(u) => {
      const ctx = u.ctx, size = 4.5 * devicePixelRatio;
      const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
      ctx.save();
      for (const m of markers) {
        const x = u.valToPos(m.t, "x", true), y = u.valToPos(m.y, "y", true);
        if (x >= left && x <= right) triangle(ctx, x, m.up ? y + size * 1.6 : y - size * 1.6, m.up, m.color, size);
      }
      ctx.restore();
    }] } };
  }

  function tradeMarkers(curve, trades) {
    const markers = [];
    if (!trades) return markers;
    for (let i = 0; i < trades.k; i++) {
      const te = curve.t0 + trades.entry_bar[i] * curve.dt, tx = curve.t0 + trades.exit_bar[i] * curve.dt;
      markers.push({ t: te, y: interpolate(curve.ts, curve.equity, te), up: true, color: "#2563eb" });
      markers.push({ t: tx, y: interpolate(curve.ts, curve.equity, tx), up: false,
        color: trades.pnl[i] > 0 ? "#15803d" : "#b91c1c" });
    }
    return markers;
  }

  function drawEquity(detail) {
    destroy("equity");
    destroy("drawdown");
    const eqNode = $("#chart-equity"), ddNode = $("#chart-drawdown");
    eqNode.textContent = "";
    ddNode.textContent = "";
    eqNode.setAttribute("data-points", "0");
    ddNode.setAttribute("data-points", "0");
    const curve = decodeEquity(detail.extra);
    if (!curve) {
      eqNode.appendChild(el("p", { class: "muted", text: detail.curve_note || "no equity curve stored for this result" }));
      return { curve: null, trades: null };
    }
    const trades = decodeTrades(detail.extra);
    const width = chartWidth(eqNode);
    const sync = uPlot.sync("backfarm");
    charts.equity = new uPlot({
      width: width, height: 260, tzDate: utc, legend: { show: true },
      cursor: { sync: { key: sync.key } },
      scales: { x: { time: true } },
      series: [{ label: "time (UTC)" }, { label: "equity", stroke: "#2563eb", width: 1.5, value: (u, v) => fmtMoney(v) }],
      axes: [{}, { size: 70, values: (u, vals) => vals.map((v) => v.toLocaleString("en-US")) }],
      plugins: [markersPlugin(tradeMarkers(curve, trades))],
    }, [curve.ts, curve.equity], eqNode);
    charts.drawdown = new uPlot({
      width: width, height: 130, tzDate: utc, legend: { show: true },
      cursor: { sync: { key: sync.key } },
      scales: { x: { time: true } },
      series: [{ label: "time (UTC)" }, { label: "drawdown %", stroke: "#b91c1c", width: 1,
        fill: "rgba(185, 28, 28, 0.18)", value: (u, v) => v === null ? "—" : v.toFixed(2) + "%" }],
      axes: [{}, { size: 70, values: (u, vals) => vals.map((v) => v.toFixed(1) + "%") }],
    }, [curve.ts, drawdown(curve.equity, detail.capital)], ddNode);
    eqNode.setAttribute("data-points", String(curve.ts.length));
    ddNode.setAttribute("data-points", String(curve.ts.length));
    return { curve: curve, trades: trades };
  }

  function renderTrades(trades, curve) {
    const node = $("#detail-trades");
    node.textContent = "";
    if (!trades) return;
    const note = trades.total > trades.k
      ? trades.k + " of " + trades.total + " trades (the largest by |P&L|)"
      : trades.total + (trades.total === 1 ? " trade" : " trades");
    node.appendChild(el("p", { class: "muted", text: note }));
    const body = el("tbody");
    for (let i = 0; i < trades.k; i++) {
      body.appendChild(el("tr", {}, [
        el("td", { class: "num", text: String(i + 1) }),
        el("td", { text: fmtTime(curve.t0 + trades.entry_bar[i] * curve.dt) }),
        el("td", { text: fmtTime(curve.t0 + trades.exit_bar[i] * curve.dt) }),
        el("td", { class: "num", text: fmtPrice(trades.entry_price[i]) }),
        el("td", { class: "num", text: fmtPrice(trades.exit_price[i]) }),
        el("td", { class: "num " + (trades.pnl[i] > 0 ? "pos" : trades.pnl[i] < 0 ? "neg" : ""),
          text: fmtMoney(trades.pnl[i]) }),
        el("td", { class: "num", text: (trades.ret[i] * 100).toFixed(2) + "%" }),
        el("td", { text: EXIT_REASONS[trades.reason[i]] || "?" }),
      ]));
    }
    const head = el("tr", {}, ["#", "entry (UTC)", "exit (UTC)", "entry price", "exit price", "P&L", "return", "exit"]
      .map((h, i) => el("th", { class: i >= 3 && i <= 6 ? "num" : "", text: h })));
    node.appendChild(el("table", {}, [el("thead", {}, [head]), body]));
  }

  function renderInfo(d) {
    const info = $("#detail-info");
    info.textContent = "";
    const m = d.metrics;
    const items = [
      ["strategy", d.strategy + " " + fmtParams(d.params)], ["symbol", d.symbol + " " + d.granularity],
      ["window", shortWindow(d.start, d.end)], ["bars", d.bars.toLocaleString("en-US")],
      ["capital", fmtMoney(d.capital)], ["return", fmtMetric("total_return", m.total_return)],
      ["sharpe", fmtMetric("sharpe", m.sharpe)], ["max dd", fmtMetric("max_drawdown", m.max_drawdown)],
      ["trades", fmtMetric("trades", m.trades)], ["win rate", fmtMetric("win_rate", m.win_rate)],
      ["fees", fmtMoney(m.fees_paid)], ["job", d.job_id],
    ];
    for (const [k, v] of items) info.appendChild(el("span", {}, [el("span", { class: "muted", text: k + " " }),
      el("b", { text: v })]));
    info.appendChild(sourceBadge(d.source, d.kind));
  }

  async function select(jobId) {
    state.selected = jobId;
    writeHash();
    for (const tr of document.querySelectorAll("tr[data-job]")) tr.classList.toggle("selected", tr.dataset.job === jobId);
    $("#detail-title").textContent = "— " + jobId;
    try {
      const d = await source.result(jobId);
      if (state.selected !== jobId) return;
      $("#detail-title").textContent = "— " + d.strategy + " · " + d.symbol;
      renderInfo(d);
      const drawn = drawEquity(d);
      renderTrades(drawn.trades, drawn.curve);
    } catch (e) {
      destroy("equity");
      destroy("drawdown");
      $("#detail-info").textContent = "";
      $("#detail-trades").textContent = "";
      $("#chart-drawdown").textContent = "";
      $("#chart-equity").textContent = "";
      $("#chart-equity").appendChild(el("p", { class: "muted", text: String(e.message || e) }));
    }
  }

  async function updateCompare(rows) {
    const ids = rows.filter((r) => r.has_curve).slice(0, COMPARE_ROWS).map((r) => r.job_id);
    const key = ids.join(",");
    if (key === compareKey) return;
    compareKey = key;
    const node = $("#chart-compare");
    destroy("compare");
    node.textContent = "";
    node.setAttribute("data-points", "0");
    if (!ids.length) { node.appendChild(el("p", { class: "muted", text: "no stored curves among these rows" })); return; }
    const data = await source.curves(ids);
    if (key !== compareKey) return;
    const lines = [];
    ids.forEach((id, i) => {
      const c = data.curves[id];
      if (!c) return;
      const curve = decodeEquity(c);
      const r = rows.find((x) => x.job_id === id);
      lines.push({ label: "#" + (i + 1) + " " + r.strategy + " " + r.symbol, index: i, ts: curve.ts,
        equity: curve.equity, capital: c.capital });
    });
    if (!lines.length) { node.appendChild(el("p", { class: "muted", text: "no stored curves among these rows" })); return; }
    drawReturns("compare", node, lines, 260);
  }

  // --- refresh loop ---------------------------------------------------------------------------------------------

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const [sweeps, lb, strategies, paper] = await Promise.all([source.sweeps(), source.leaderboard(),
        source.strategies(), source.paper()]);
      renderSweeps(sweeps);
      renderBoard(lb);
      renderStrategies(strategies);
      renderPaper(paper);
      if (!state.selected && lb.rows.length) select(lb.rows[0].job_id);
      await updateCompare(lb.rows);
      setStatus(report ? "report · generated " + fmtTime(REPORT.generated_at) + " UTC"
        : "updated " + new Date().toLocaleTimeString() + " · every " + meta.refresh_s + " s", false);
      document.body.setAttribute("data-ready", "1");
    } catch (e) {
      setStatus("error: " + (e.message || e), true);
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  function resize() {
    for (const [name, node] of [["equity", "#chart-equity"], ["drawdown", "#chart-drawdown"],
      ["compare", "#chart-compare"], ["paper", "#chart-paper"]]) {
      const chart = charts[name];
      if (chart) chart.setSize({ width: chartWidth($(node)), height: chart.height });
    }
  }

  async function start() {
    try {
      meta = await source.meta();
    } catch (e) {
      setStatus("error: " + (e.message || e), true);
      setTimeout(start, 3000);
      return;
    }
    $("#store").textContent = report ? "report of sweep " + REPORT.sweep_id + " · "
      + REPORT.total.toLocaleString("en-US") + " results" + (REPORT.rows.length < REPORT.total ? " · the best "
      + REPORT.rows.length.toLocaleString("en-US") + " by " + REPORT.metric + " included" : "") : meta.store;
    state.metric = meta.default_metric || state.metric;
    const chosen = readHash();  // the address names a sweep (or "all")
    if (report) {
      state.sweep = REPORT.sweep_id;
      $("#f-sweep").disabled = true;
      $("#paper").hidden = true;
    } else if (!chosen) {  // open on the latest sweep, as `backfarm leaderboard` does (errors: the refresh shows them)
      const data = await source.sweeps().catch(() => ({ sweeps: [] }));
      if (data.sweeps.length) state.sweep = data.sweeps[0].sweep_id;
    }
    bindControls();
    syncControls();
    window.addEventListener("resize", resize);
    const fromHash = state.selected;  // without one, the first refresh selects the top row itself
    await refresh();
    if (fromHash) select(fromHash);
    if (!report) {
      setInterval(() => { if (!document.hidden) refresh(); }, Math.max(0.5, meta.refresh_s) * 1000);
    }
  }

  start();
})();
