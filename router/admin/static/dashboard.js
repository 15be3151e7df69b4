// The dashboard. The history is kept by the admin server (/admin/metrics/history.json:
// one sample a second for the last minutes), so a page load draws the last minutes at
// once; then new samples are fetched each poll. Every number covers the same window
// (windowSecs, said on the page): requests/s, success rate and p50/p99 latency.
// Per router: totals, charts, services, clients; a client row expands to its charts and
// the load balancer's view of each endpoint (/client_state.json). Services and clients
// that expire after the idle TTL leave the samples, and the tables. Under `workers: N`
// a table of the data-path processes (/workers.json) sits above the routers.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const INTERVAL_MS = Math.max(200, Number(params.get("interval")) || 1000);
  const UNHEALTHY_SR = 0.9;
  const data = JSON.parse(document.getElementById("l5d-data").textContent);
  const root = document.getElementById("routers");
  const status = document.getElementById("status");
  const reloadEl = document.getElementById("reload");
  const workersEl = document.getElementById("workers");
  const fmt = L5DCharts.fmt;
  let samples = [];               // [{t, routers: {label: {total, servers, services, clients}}}]
  let windowS = 10, historyS = 300;
  const expanded = new Set();     // "label client" of expanded client rows
  let clientState = {};

  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v === 1 ? 0 : 1) + "%"; }
  function ms(v) { return v === null || v === undefined ? "–" : fmt(v) + " ms"; }
  function num(v) { return v === null || v === undefined ? "–" : fmt(v); }

  function section(label) {
    const id = "router-" + label;
    let el = document.getElementById(id);
    if (el) return el;
    el = document.createElement("section");
    el.className = "router"; el.id = id; el.dataset.router = label;
    el.innerHTML = `
      <h2><span class="name">${esc(label)}</span> <small class="servers"></small></h2>
      <div class="stats">
        <div class="stat stat-sr"><div class="label">Success rate</div><div class="value">–</div></div>
        <div class="stat stat-rps"><div class="label">Requests/s</div><div class="value">–</div></div>
        <div class="stat stat-requests"><div class="label">Requests</div><div class="value">0</div></div>
        <div class="stat stat-failures"><div class="label">Failures</div><div class="value">0</div></div>
        <div class="stat stat-p50"><div class="label">p50 latency</div><div class="value">–</div></div>
        <div class="stat stat-p99"><div class="label">p99 latency</div><div class="value">–</div></div>
      </div>
      <p class="window"></p>
      <div class="charts">
        <div class="chart"><h3>Success rate</h3><canvas class="chart-sr"></canvas></div>
        <div class="chart"><h3>Requests per second</h3><canvas class="chart-rps"></canvas></div>
        <div class="chart"><h3>Latency (ms)</h3><canvas class="chart-latency"></canvas></div>
      </div>
      <h4>Services</h4>
      <div class="table-wrap"><table class="services"><thead><tr><th>Service</th><th class="num">Requests</th><th class="num">Req/s</th><th class="num">Success rate</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">Retries</th></tr></thead><tbody></tbody></table></div>
      <h4>Clients</h4>
      <div class="table-wrap"><table class="clients"><thead><tr><th>Client</th><th class="num">Requests</th><th class="num">Req/s</th><th class="num">Success rate</th><th class="num">p99 ms</th><th class="num">Endpoints</th><th class="num">Connections</th></tr></thead><tbody></tbody></table></div>`;
    el.querySelector("table.clients").addEventListener("click", ev => {
      const tr = ev.target.closest("tr.client");
      if (!tr) return;
      const key = label + " " + tr.dataset.name;
      if (expanded.has(key)) expanded.delete(key); else expanded.add(key);
      render();
      if (expanded.has(key)) refreshClients().then(render);
    });
    root.appendChild(el);
    return el;
  }

  // [[t, v]] of one field of one entity across the samples (null where it was absent).
  function series(label, pick, field, scale) {
    return samples.map(s => {
      const r = s.routers[label];
      const e = r ? pick(r) : null;
      const v = e ? e[field] : null;
      return [s.t, v === null || v === undefined ? null : v * (scale || 1)];
    });
  }
  function charts(el, label, pick, now) {
    const opts = {spanS: historyS, now: now};
    L5DCharts.drawChart(el.querySelector(".chart-sr"), [{label: "success", color: "#1f9d55", points: series(label, pick, "sr", 100)}], {...opts, max: 100, minSpan: 10, floor: 0, unit: "%"});
    L5DCharts.drawChart(el.querySelector(".chart-rps"), [{label: "req/s", color: "#3b5bdb", points: series(label, pick, "rps")}], {...opts, min: 0});
    L5DCharts.drawChart(el.querySelector(".chart-latency"), [{label: "p50", color: "#3b5bdb", points: series(label, pick, "p50")}, {label: "p99", color: "#d97706", points: series(label, pick, "p99")}], {...opts, min: 0, unit: "ms"});
  }

  function endpointsTable(state) {
    if (!state) return `<p class="empty">no state yet</p>`;
    const eps = state.endpoints || (state.addresses || []).map(a => ({address: a}));
    if (!eps.length) return `<p class="empty">no endpoints (${esc(state.state)})</p>`;
    return `<table class="endpoints"><thead><tr><th>Endpoint</th><th class="num">Weight</th><th class="num">In flight</th><th class="num">Connections</th><th class="num">Idle</th><th class="num">Load estimate ms</th><th>State</th></tr></thead><tbody>` +
      eps.map(e => `<tr class="${e.available === false ? "unhealthy" : ""}"><td class="mono">${esc(e.address)}</td><td class="num">${num(e.weight)}</td><td class="num">${num(e.pending)}</td><td class="num">${num(e.connections)}</td><td class="num">${num(e.idle)}</td><td class="num">${num(e.loadEstimateMs)}</td><td>${e.removedByFailureAccrual ? "removed (failure accrual)" : e.down ? "down (connect failed)" : "available"}</td></tr>`).join("") +
      `</tbody></table>`;
  }

  function renderRouter(label, now) {
    const el = section(label);
    const last = samples.length ? samples[samples.length - 1].routers[label] : null;
    const t = last ? last.total : {};
    el.querySelector(".servers").textContent = last ? last.servers.join(", ") : "";
    el.querySelector(".window").textContent = `Rates, success rate and latency over the last ${windowS} s; charts: the last ${Math.round(historyS / 60)} min (one sample a second, kept by the router).`;
    const set = (cls, text, bad) => {
      const s = el.querySelector(cls); s.querySelector(".value").textContent = text;
      s.classList.toggle("bad", !!bad);
    };
    set(".stat-sr", pct(t.sr), t.sr !== null && t.sr !== undefined && t.sr < UNHEALTHY_SR);
    set(".stat-rps", num(t.rps));
    set(".stat-requests", String(t.requests || 0));
    set(".stat-failures", String(t.failures || 0), (t.failures || 0) > 0);
    set(".stat-p50", ms(t.p50));
    set(".stat-p99", ms(t.p99));
    charts(el, label, r => r.total, now);

    const services = Object.entries(last ? last.services : {}).sort((a, b) => a[0].localeCompare(b[0]));
    el.querySelector("table.services tbody").innerHTML = services.length ? services.map(([name, s]) => {
      const bad = s.sr !== null && s.sr < UNHEALTHY_SR;
      return `<tr class="${bad ? "unhealthy" : ""}" data-name="${esc(name)}"><td class="mono">${esc(name)}</td>` +
        `<td class="num">${s.requests}</td><td class="num">${num(s.rps)}</td><td class="num">${pct(s.sr)}</td>` +
        `<td class="num">${num(s.p50)}</td><td class="num">${num(s.p99)}</td><td class="num">${s.retries || 0}</td></tr>`;
    }).join("") : `<tr><td class="empty" colspan="7">no services (none has seen traffic within the idle TTL)</td></tr>`;

    const clients = Object.entries(last ? last.clients : {}).sort((a, b) => a[0].localeCompare(b[0]));
    const tbody = el.querySelector("table.clients tbody");
    // keep expanded panels' canvases: rebuild rows, then draw the panels' charts
    tbody.innerHTML = clients.length ? clients.map(([name, c]) => {
      const open = expanded.has(label + " " + name);
      const bad = (c.sr !== null && c.sr < UNHEALTHY_SR) || c.endpoints === 0;
      const eps = c.endpoints === null ? "–" : `${fmt(c.endpoints)} / ${c.size === null ? "?" : fmt(c.size)}`;
      let html = `<tr class="client ${bad ? "unhealthy" : ""} ${open ? "open" : ""}" data-name="${esc(name)}" title="click for details">` +
        `<td class="mono"><span class="caret">${open ? "▾" : "▸"}</span> ${esc(name)}</td><td class="num">${c.requests}</td><td class="num">${num(c.rps)}</td>` +
        `<td class="num">${pct(c.sr)}</td><td class="num">${num(c.p99)}</td><td class="num">${eps}</td><td class="num">${num(c.connections)}</td></tr>`;
      if (open) {
        html += `<tr class="client-panel" data-name="${esc(name)}"><td colspan="7"><div class="panel">
          <div class="charts">
            <div class="chart"><h3>Success rate</h3><canvas class="chart-sr"></canvas></div>
            <div class="chart"><h3>Requests per second</h3><canvas class="chart-rps"></canvas></div>
            <div class="chart"><h3>Latency (ms)</h3><canvas class="chart-latency"></canvas></div>
          </div>
          <h5>Load balancer: each endpoint</h5>${endpointsTable(clientState[name.slice(1)] || clientState[name])}</div></td></tr>`;
      }
      return html;
    }).join("") : `<tr><td class="empty" colspan="7">no clients (none has seen traffic within the idle TTL)</td></tr>`;
    for (const panel of tbody.querySelectorAll("tr.client-panel")) {
      const name = panel.dataset.name;
      charts(panel, label, r => r.clients[name], now);
    }
  }

  function renderReload(st) {
    if (!st) return;
    const when = st.loadedAt ? new Date(st.loadedAt * 1000).toLocaleTimeString() : "?";
    const ok = `config version ${st.version}${st.configFile ? " of " + esc(st.configFile) : ""}, loaded ${when}` +
      (st.reloadable ? (st.watching ? " · watched for changes" : " · reload: SIGHUP or POST /admin/reload") : " · not reloadable");
    reloadEl.querySelector(".ok").innerHTML = ok;
    const err = reloadEl.querySelector(".error");
    if (st.lastError) {
      const at = st.lastErrorAt ? new Date(st.lastErrorAt * 1000).toLocaleTimeString() : "";
      err.textContent = `Reload refused at ${at} (still serving version ${st.version}): ${st.lastError}`;
    } else {
      err.textContent = "";
    }
    reloadEl.classList.toggle("bad", !!st.lastError);
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  }

  function mb(bytes) { return bytes === null || bytes === undefined ? "–" : (bytes / 1048576).toFixed(1) + " MB"; }

  function renderWorkers(st) {
    if (!st) return;
    if (!st.supervisor) {  // workers: 1
      const w = st.workers[0] || {};
      workersEl.className = "single";
      workersEl.innerHTML = `1 worker: this process (pid <span class="mono">${esc(w.pid)}</span>) serves every router`;
      return;
    }
    const serving = st.workers.filter(w => w.state === "serving").length;
    const rows = st.workers.map(w => {
      const exit = w.lastExitReason
        ? esc(w.lastExitReason) + (w.lastExitAt ? " at " + new Date(w.lastExitAt * 1000).toLocaleTimeString() : "")
        : "–";
      return `<tr class="worker state-${esc(w.state)}${w.state === "serving" ? "" : " unhealthy"}" data-worker="${esc(w.worker)}">` +
        `<td>${esc(w.worker)}</td><td class="mono pid">${esc(w.pid === null ? "–" : w.pid)}</td>` +
        `<td class="state">${esc(w.state)}</td><td class="num restarts">${esc(w.restarts)}</td>` +
        `<td class="num uptime">${duration(w.uptimeSecs)}</td><td class="num rss">${mb(w.rssBytes)}</td>` +
        `<td class="exit">${exit}</td></tr>`;
    }).join("");
    workersEl.className = "many";
    workersEl.innerHTML = `<h3>Workers <small>${serving} of ${st.count} serving · supervisor pid ` +
      `<span class="mono">${esc(st.supervisor.pid)}</span>, ${mb(st.supervisor.rssBytes)}</small></h3><div class="table-wrap"><table class="workers">` +
      `<thead><tr><th>worker</th><th>pid</th><th>state</th><th class="num">restarts</th><th class="num">uptime</th>` +
      `<th class="num">memory</th><th>last exit</th></tr></thead>` +
      `<tbody>${rows}</tbody></table></div>`;
  }

  function render() {
    const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
    const labels = new Set(data.routers.map(r => r.label));
    if (samples.length) for (const l of Object.keys(samples[samples.length - 1].routers)) labels.add(l);
    for (const label of labels) renderRouter(label, now);
    // a router removed by a reload leaves the page
    for (const el of root.querySelectorAll("section.router")) {
      if (!labels.has(el.dataset.router)) el.remove();
    }
  }

  async function refreshClients() {
    try {
      const rsp = await fetch("/client_state.json?endpoints=1", {cache: "no-store"});
      if (rsp.ok) clientState = await rsp.json();
    } catch (e) { /* the next poll tries again */ }
  }

  async function poll() {
    try {
      const since = samples.length ? samples[samples.length - 1].t : null;
      const rsp = await fetch("/admin/metrics/history.json" + (since ? "?since=" + since : ""), {cache: "no-store"});
      if (!rsp.ok) throw new Error("history.json: HTTP " + rsp.status);
      const h = await rsp.json();
      windowS = h.windowSecs; historyS = h.historySecs;
      samples = samples.concat(h.samples);
      if (samples.length) {
        const cut = samples[samples.length - 1].t - historyS;
        samples = samples.filter(s => s.t >= cut);
      }
      if (expanded.size) await refreshClients();
      try {
        const r = await fetch("/admin/reload.json", {cache: "no-store"});
        if (r.ok) renderReload(await r.json());
      } catch (e) { /* shown next time */ }
      try {
        const r = await fetch("/workers.json", {cache: "no-store"});
        if (r.ok) renderWorkers(await r.json());
      } catch (e) { /* shown next time */ }
      render();
      status.textContent = "updated " + new Date().toLocaleTimeString();
      status.dataset.polls = String(Number(status.dataset.polls || 0) + 1);
      status.dataset.samples = String(samples.length);
    } catch (e) {
      status.textContent = "cannot read metrics: " + e.message;
    } finally {
      setTimeout(poll, INTERVAL_MS);
    }
  }
  for (const r of data.routers) section(r.label);
  poll();
})();
