// Tiny line charts on <canvas>: no libraries, so the admin page works offline.
"use strict";
(function (global) {
  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + "k";
    if (Math.abs(v) >= 100) return v.toFixed(0);
    if (Math.abs(v) >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  // series: [{label, color, values: [number|null]}]; opts: {min, max, capacity, unit}
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
    const left = 50, right = 8, top = 16, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;
    const cap = opts.capacity || 300;
    let lo = opts.min !== undefined ? opts.min : Infinity;
    let hi = opts.max !== undefined ? opts.max : -Infinity;
    for (const s of series) for (const v of s.values) {
      if (v === null || v === undefined) continue;
      if (opts.min === undefined) lo = Math.min(lo, v);
      if (opts.max === undefined) hi = Math.max(hi, v);
    }
    if (!Number.isFinite(lo)) lo = 0;
    if (!Number.isFinite(hi) || hi <= lo) hi = lo + 1;
    if (opts.max === undefined) hi = hi * 1.1;
    // grid and y labels
    ctx.strokeStyle = "#e6e9ef"; ctx.fillStyle = "#6b7385"; ctx.lineWidth = 1;
    ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      ctx.fillText(fmt(lo + ((hi - lo) * i) / 4) + (opts.unit || ""), left - 4, y);
    }
    // x axis: how far back the window reaches, assuming opts.stepMs between points
    if (opts.stepMs) {
      const secs = Math.round((cap - 1) * opts.stepMs / 1000);
      ctx.fillStyle = "#6b7385"; ctx.textBaseline = "top";
      ctx.textAlign = "left"; ctx.fillText(secs >= 120 ? `-${Math.round(secs / 60)} min` : `-${secs} s`, left, top + ph + 2);
      ctx.textAlign = "right"; ctx.fillText("now", left + pw, top + ph + 2);
    }
    // series
    series.forEach((s, si) => {
      const vals = s.values.slice(-cap);
      const offset = cap - vals.length;
      ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
      let pen = false;
      vals.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        const x = left + (pw * (offset + i)) / (cap - 1);
        const y = top + ph - (ph * (Math.min(Math.max(v, lo), hi) - lo)) / (hi - lo);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
      // mark the newest point, so a series with one sample (or after a gap) still shows
      for (let i = vals.length - 1; i >= 0; i--) {
        const v = vals[i];
        if (v === null || v === undefined) continue;
        const x = left + (pw * (offset + i)) / (cap - 1);
        const y = top + ph - (ph * (Math.min(Math.max(v, lo), hi) - lo)) / (hi - lo);
        ctx.fillStyle = s.color; ctx.beginPath(); ctx.arc(x, y, 2.5, 0, 2 * Math.PI); ctx.fill();
        break;
      }
      // legend with the latest value
      const last = vals.length ? vals[vals.length - 1] : null;
      ctx.fillStyle = s.color; ctx.textAlign = "left"; ctx.textBaseline = "top";
      const shown = last === null || last === undefined ? "–" : fmt(last) + (opts.unit || "");
      ctx.fillText(s.label + " " + shown, left + 4 + si * 110, 2);
    });
  }

  global.L5DCharts = { drawChart: drawChart, fmt: fmt };
})(window);
