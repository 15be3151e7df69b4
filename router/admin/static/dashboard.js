// The dashboard: polls /admin/metrics.json?tree=1 and keeps a client-side history
// per router (success rate, requests/s, p50/p99) plus tables of services and clients.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const INTERVAL_MS = Math.max(200, Number(params.get("interval")) || 1000);
  const HISTORY = 300;            // points kept per chart (5 minutes at 1 s)
  const SR_WINDOW = 10;           // success rate over the last N samples
  const UNHEALTHY_SR = 0.9;
  const data = JSON.parse(document.getElementById("l5d-data").textContent);
  const root = document.getElementById("routers");
  const status = document.getElementById("status");
  const fmt = L5DCharts.fmt;
  const state = {};               // label -> {samples: [...], series: {...}, entities: {...}}

  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }
  function counter(node, name) {
    const n = node && node[name];
    return n && typeof n.counter === "number" ? n.counter : 0;
  }
  function gauge(node, ...path) {
    let n = node;
    for (const p of path) n = n && n[p];
    return n && typeof n.gauge === "number" ? n.gauge : null;
  }
  function stat(node, name, field) {
    const n = node && node[name];
    const v = n && n["stat." + field];
    return typeof v === "number" ? v : null;
  }
  // Entities (servers, services, clients) are the subtrees holding a `requests` counter;
  // their names may span several scope segments (a server is ip/port).
  function entities(node, prefix, out) {
    out = out || [];
    if (!node || typeof node !== "object") return out;
    for (const [k, child] of Object.entries(node)) {
      if (!child || typeof child !== "object") continue;
      const name = prefix ? prefix + "/" + k : k;
      if (child.requests && typeof child.requests.counter === "number") out.push([name, child]);
      else entities(child, name, out);
    }
    return out;
  }
  // Charts show the last minute at first, growing to the whole history as it fills.
  function cap(values) { return Math.min(HISTORY, Math.max(60, values.length)); }
  function pct(v) { return v === null ? "–" : (v * 100).toFixed(v === 1 ? 0 : 1) + "%"; }

  function section(label) {
    const id = "router-" + label;
    let el = document.getElementById(id);
    if (el) return el;
    el = document.createElement("section");
    el.className = "router"; el.id = id; el.dataset.router = label;
    el.innerHTML = `
      <h2>${esc(label)} <small class="servers"></small></h2>
      <div class="stats">
        <div class="stat stat-sr"><div class="label">Success rate</div><div class="value">–</div></div>
        <div class="stat stat-rps"><div class="label">Requests/s</div><div class="value">–</div></div>
        <div class="stat stat-requests"><div class="label">Requests</div><div class="value">0</div></div>
        <div class="stat stat-failures"><div class="label">Failures</div><div class="value">0</div></div>
        <div class="stat stat-p50"><div class="label">p50 latency</div><div class="value">–</div></div>
        <div class="stat stat-p99"><div class="label">p99 latency</div><div class="value">–</div></div>
      </div>
      <div class="charts">
        <div class="chart"><h3>Success rate</h3><canvas class="chart-sr"></canvas></div>
        <div class="chart"><h3>Requests per second</h3><canvas class="chart-rps"></canvas></div>
        <div class="chart"><h3>Latency (ms, from the last histogram snapshot)</h3><canvas class="chart-latency"></canvas></div>
      </div>
      <h4>Services</h4>
      <table class="services"><thead><tr><th>Service</th><th class="num">Requests</th><th class="num">Req/s</th><th class="num">Success rate</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">Retries</th></tr></thead><tbody></tbody></table>
      <h4>Clients</h4>
      <table class="clients"><thead><tr><th>Client</th><th class="num">Requests</th><th class="num">Req/s</th><th class="num">Success rate</th><th class="num">p99 ms</th><th class="num">Endpoints available</th><th class="num">Connections</th></tr></thead><tbody></tbody></table>`;
    root.appendChild(el);
    return el;
  }

  // Keep per-entity samples so rates come from deltas between polls.
  function track(store, key, now, req, succ, fail) {
    const h = store[key] || (store[key] = []);
    h.push({t: now, req: req, succ: succ, fail: fail});
    if (h.length > HISTORY) h.shift();
    const prev = h.length > 1 ? h[h.length - 2] : null;
    const win = h[Math.max(0, h.length - 1 - SR_WINDOW)];
    const last = h[h.length - 1];
    const rps = prev ? Math.max(0, last.req - prev.req) / Math.max(0.001, (last.t - prev.t) / 1000) : null;
    let dS = last.succ - win.succ, dF = last.fail - win.fail;
    let sr = dS + dF > 0 ? dS / (dS + dF) : null;
    if (sr === null && h.length === 1 && succ + fail > 0) sr = succ / (succ + fail);
    return {rps: rps, sr: sr, hasTraffic: dS + dF > 0 || (h.length === 1 && req > 0)};
  }

  function row(cells, unhealthy, name) {
    return `<tr class="${unhealthy ? "unhealthy" : ""}" data-name="${esc(name)}">` +
      cells.map((c, i) => `<td class="${i ? "num" : "mono"}">${c}</td>`).join("") + "</tr>";
  }

  function renderRouter(label, node, now) {
    const el = section(label);
    const st = state[label] || (state[label] = {total: [], services: {}, clients: {}, sr: [], rps: [], p50: [], p99: []});
    const servers = entities(node && node.server, "");
    let req = 0, succ = 0, fail = 0, p50 = null, p99 = null;
    for (const [, s] of servers) {
      req += counter(s, "requests"); succ += counter(s, "success"); fail += counter(s, "failures");
      const a = stat(s, "request_latency_ms", "p50"), b = stat(s, "request_latency_ms", "p99");
      if (a !== null) p50 = Math.max(p50 || 0, a);
      if (b !== null) p99 = Math.max(p99 || 0, b);
    }
    el.querySelector(".servers").textContent = servers.map(s => s[0]).join(", ");
    const t = track(st, "total", now, req, succ, fail);
    for (const [k, v] of [["sr", t.sr], ["rps", t.rps], ["p50", p50], ["p99", p99]]) {
      st[k].push(v); if (st[k].length > HISTORY) st[k].shift();
    }
    const set = (cls, text, bad) => {
      const s = el.querySelector(cls); s.querySelector(".value").textContent = text;
      s.classList.toggle("bad", !!bad);
    };
    set(".stat-sr", pct(t.sr), t.sr !== null && t.sr < UNHEALTHY_SR);
    set(".stat-rps", t.rps === null ? "–" : fmt(t.rps));
    set(".stat-requests", String(req));
    set(".stat-failures", String(fail), fail > 0);
    set(".stat-p50", p50 === null ? "–" : fmt(p50) + " ms");
    set(".stat-p99", p99 === null ? "–" : fmt(p99) + " ms");
    L5DCharts.drawChart(el.querySelector(".chart-sr"), [{label: "success", color: "#1f9d55", values: st.sr.map(v => v === null ? null : v * 100)}], {min: 0, max: 100, unit: "%", capacity: cap(st.sr), stepMs: INTERVAL_MS});
    L5DCharts.drawChart(el.querySelector(".chart-rps"), [{label: "req/s", color: "#3b5bdb", values: st.rps}], {min: 0, capacity: cap(st.rps), stepMs: INTERVAL_MS});
    L5DCharts.drawChart(el.querySelector(".chart-latency"), [{label: "p50", color: "#3b5bdb", values: st.p50}, {label: "p99", color: "#d97706", values: st.p99}], {min: 0, unit: "ms", capacity: cap(st.p50), stepMs: INTERVAL_MS});

    const services = entities(node && node.service, "").sort((a, b) => a[0].localeCompare(b[0]));
    el.querySelector("table.services tbody").innerHTML = services.length ? services.map(([name, s]) => {
      const r = track(st.services, name, now, counter(s, "requests"), counter(s, "success"), counter(s, "failures"));
      const bad = r.sr !== null && r.sr < UNHEALTHY_SR;
      const p50s = stat(s, "request_latency_ms", "p50"), p99s = stat(s, "request_latency_ms", "p99");
      const retries = s.retries && s.retries.total && typeof s.retries.total.counter === "number" ? s.retries.total.counter : 0;
      return row(["/" + esc(name), counter(s, "requests"), r.rps === null ? "–" : fmt(r.rps), pct(r.sr),
        p50s === null ? "–" : fmt(p50s), p99s === null ? "–" : fmt(p99s), retries], bad, "/" + name);
    }).join("") : `<tr><td class="empty" colspan="7">no services yet</td></tr>`;

    const clients = entities(node && node.client, "").sort((a, b) => a[0].localeCompare(b[0]));
    el.querySelector("table.clients tbody").innerHTML = clients.length ? clients.map(([name, c]) => {
      const r = track(st.clients, name, now, counter(c, "requests"), counter(c, "success"), counter(c, "failures"));
      const size = gauge(c, "loadbalancer", "size"), avail = gauge(c, "loadbalancer", "available");
      const conns = gauge(c, "connections");
      const p99c = stat(c, "request_latency_ms", "p99");
      const bad = (r.sr !== null && r.sr < UNHEALTHY_SR) || (avail !== null && avail === 0);
      return row(["/" + esc(name), counter(c, "requests"), r.rps === null ? "–" : fmt(r.rps), pct(r.sr),
        p99c === null ? "–" : fmt(p99c), avail === null ? "–" : `${avail} / ${size === null ? "?" : size}`,
        conns === null ? "–" : conns], bad, "/" + name);
    }).join("") : `<tr><td class="empty" colspan="7">no clients yet</td></tr>`;
  }

  async function poll() {
    try {
      const rsp = await fetch("/admin/metrics.json?tree=1", {cache: "no-store"});
      if (!rsp.ok) throw new Error("metrics.json: HTTP " + rsp.status);
      const tree = await rsp.json();
      const now = Date.now();
      const labels = new Set(data.routers.map(r => r.label));
      for (const l of Object.keys((tree && tree.rt) || {})) labels.add(l);
      for (const label of labels) renderRouter(label, tree.rt && tree.rt[label], now);
      status.textContent = "updated " + new Date(now).toLocaleTimeString();
      status.dataset.polls = String(Number(status.dataset.polls || 0) + 1);
    } catch (e) {
      status.textContent = "cannot read metrics: " + e.message;
    } finally {
      setTimeout(poll, INTERVAL_MS);
    }
  }
  for (const r of data.routers) section(r.label);
  poll();
})();
