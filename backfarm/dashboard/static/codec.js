/* backfarm dashboard: the artifact codec, the page's twin of backfarm/engine/artifacts.py (same layout, format 1).
 *
 * A stored equity curve or trade list is one base64 string of little-endian typed columns laid end to end; these
 * functions split it back into arrays. Loaded before app.js, which reads them from window.backfarmCodec.
 */
window.backfarmCodec = (function () {
  "use strict";

  const EQUITY_LAYOUTS = { 2: [["step", "u2"], ["equity", "f4"]], 4: [["step", "u4"], ["equity", "f4"]] };
  const TRADES_LAYOUT = [["entry_bar", "u4"], ["exit_bar", "u4"], ["entry_price", "f4"], ["exit_price", "f4"],
    ["qty", "f4"], ["pnl", "f4"], ["ret", "f4"], ["reason", "u1"]];
  const EXIT_REASONS = ["signal", "stop", "target", "end"];

  function columns(art, layout) {
    const bin = atob(art.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const out = {};
    let offset = 0;
    for (const [name, type] of layout) {
      const size = type === "u1" ? 1 : type === "u2" ? 2 : 4;
      const buf = bytes.buffer.slice(offset, offset + size * art.k);  // a copy: aligned for any typed array
      out[name] = Array.from(type === "u4" ? new Uint32Array(buf) : type === "f4" ? new Float32Array(buf)
        : type === "u2" ? new Uint16Array(buf) : new Uint8Array(buf));
      offset += size * art.k;
    }
    return out;
  }

  function decodeEquity(extra) {
    const art = extra && extra.equity;
    if (!art || art.v !== 1 || !EQUITY_LAYOUTS[art.iw]) return null;
    const cols = columns(art, EQUITY_LAYOUTS[art.iw]);
    let bar = 0;
    const ts = cols.step.map((step) => { bar += step; return art.t0 + (bar + 1) * art.dt; });
    return { ts: ts, equity: cols.equity, bars: art.n, t0: art.t0, dt: art.dt };
  }

  function decodeTrades(extra) {
    const art = extra && extra.trades;
    if (!art || art.v !== 1) return null;
    const cols = columns(art, TRADES_LAYOUT);
    cols.total = art.n;
    cols.k = art.k;
    return cols;
  }

  function drawdown(equity, capital) {
    let peak = capital;
    return equity.map((e) => { peak = Math.max(peak, e); return (e / peak - 1) * 100; });
  }

  function interpolate(xs, ys, t) {
    let lo = 0, hi = xs.length - 1;
    if (t <= xs[0]) return ys[0];
    if (t >= xs[hi]) return ys[hi];
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (xs[mid] <= t) lo = mid; else hi = mid; }
    return ys[lo] + (ys[hi] - ys[lo]) * (t - xs[lo]) / (xs[hi] - xs[lo]);
  }

  return { EXIT_REASONS, decodeEquity, decodeTrades, drawdown, interpolate };
})();
