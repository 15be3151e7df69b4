// Tiny line charts on <canvas>: no libraries, so the admin page works offline.
// Points are [unix seconds, value|null]; the x axis is time (the last `spanS` seconds up
// to `now`), the y axis gets round ticks (1, 2, 5 x 10^k).
"use strict";
(function (global) {
  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return trim(v / 1e6) + "M";
    if (a >= 1000) return trim(v / 1000) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
    if (a === 0) return "0";
    return v.toFixed(2).replace(/\.?0+$/, "");
  }
  function trim(v) { return (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)).replace(/\.0$/, ""); }

  // A round step so that about `n` steps cover `range`.
  function niceStep(range, n) {
    const raw = range / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) hi = lo + 1;
    const step = niceStep(hi - lo, n);
    const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }
  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600];
  function timeLabel(ago) {
    if (ago === 0) return "now";
    return ago % 60 === 0 ? `-${ago / 60} min` : `-${ago} s`;
  }

  // series: [{label, color, points: [[t, v|null]]}]; opts: {min, max, unit, spanS, now}
  function drawChart(canvas, series, opts) {
    opts = opts || {};
    const dpr = global.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 46, right = 10, top = 18, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;
    const now = opts.now || Date.now() / 1000, span = opts.spanS || 300;
    const t0 = now - span;
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const [t, v] of s.points) {
      if (v === null || v === undefined || t < t0) continue;
      lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (opts.min !== undefined) lo = Math.min(opts.min, lo);
    if (opts.max !== undefined && hi <= opts.max) hi = opts.max;
    if (opts.minSpan && hi - lo < opts.minSpan) lo = Math.max(opts.floor || 0, hi - opts.minSpan);
    if (hi <= lo) hi = lo + 1;
    const ticks = niceTicks(lo, hi, 4);
    lo = ticks[0]; hi = ticks[ticks.length - 1];
    const X = t => left + pw * (t - t0) / span;
    const Y = v => top + ph - ph * (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo);
    ctx.strokeStyle = "#e6e9ef"; ctx.fillStyle = "#6b7385"; ctx.lineWidth = 1;
    ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const v of ticks) {
      const y = Y(v);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      ctx.fillText(fmt(v) + (opts.unit || ""), left - 4, y);
    }
    // x ticks at round times back from now, about one per 70 px
    const step = TIME_STEPS.find(s => pw * s / span >= 70) || 600;
    ctx.textBaseline = "top";
    for (let ago = 0; ago <= span; ago += step) {
      const x = X(now - ago);
      ctx.textAlign = ago === 0 ? "right" : "center";
      ctx.fillText(timeLabel(ago), x, top + ph + 3);
      ctx.beginPath(); ctx.moveTo(x, top + ph); ctx.lineTo(x, top + ph + 2); ctx.stroke();
    }
    series.forEach((s, si) => {
      ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
      let pen = false, prevT = null, last = null;
      for (const [t, v] of s.points) {
        if (t < t0) continue;
        if (v === null || v === undefined || (prevT !== null && t - prevT > 3)) pen = false;
        if (v === null || v === undefined) { prevT = t; continue; }
        if (pen) ctx.lineTo(X(t), Y(v)); else ctx.moveTo(X(t), Y(v));
        pen = true; prevT = t; last = [t, v];
      }
      ctx.stroke();
      if (last) {  // mark the newest point: a series with one sample still shows
        ctx.fillStyle = s.color; ctx.beginPath();
        ctx.arc(X(last[0]), Y(last[1]), 2.5, 0, 2 * Math.PI); ctx.fill();
      }
      ctx.fillStyle = s.color; ctx.textAlign = "left"; ctx.textBaseline = "top";
      const shown = last ? fmt(last[1]) + (opts.unit || "") : "–";
      ctx.fillText(s.label + " " + shown, left + 4 + si * 100, 2);
    });
  }

  global.L5DCharts = { drawChart: drawChart, fmt: fmt, niceTicks: niceTicks };
})(window);
