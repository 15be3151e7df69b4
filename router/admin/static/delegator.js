// The delegator: pick a router, edit the dtab, resolve a name, and see the
// delegation tree node by node (reference §4.1 shapes) with the dentry that
// matched at each step, the bound addresses, and why a branch is Neg or failed.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("l5d-data").textContent);
  const $ = id => document.getElementById(id);
  const routerSel = $("router"), dtabIn = $("dtab"), pathIn = $("path"), tree = $("tree");
  const summary = $("summary");
  const dtabErr = $("dtab-error"), pathErr = $("path-error"), resultErr = $("result-error");
  let seq = 0, timer = null;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }
  function pretty(dtab) {
    return (dtab || "").split(";").map(s => s.trim().replace(/\s*=>\s*/, " => "))
      .filter(Boolean).join(";\n");
  }
  function routerDtab(label) {
    const r = data.routers.find(r => r.label === label);
    return r ? pretty(r.dtab) : "";
  }

  // success / neg / fail, as Linkerd's delegator decides which branch is primary.
  function outcome(n) {
    switch (n.type) {
      case "delegate": return outcome(n.delegate);
      case "transformation": return outcome(n.tree);
      case "alt": {
        for (const a of n.alt) { const o = outcome(a); if (o !== "neg") return o; }
        return "neg";
      }
      case "union": {
        const os = n.union.map(w => outcome(w.tree));
        return os.includes("fail") ? "fail" : os.includes("success") ? "success" : "neg";
      }
      case "neg": return "neg";
      case "fail": case "exception": return "fail";
      case "empty": return "neg";
      case "leaf": {
        const a = n.bound && n.bound.addr;
        if (!a) return "neg";
        return a.type === "neg" ? "neg" : a.type === "failed" ? "fail" : "success";
      }
    }
    return "neg";
  }

  function dentry(d) {
    if (!d) return "";
    return `<span class="dentry">matched <code>${esc(d.prefix)} =&gt; ${esc(d.dst)}</code></span>`;
  }

  function addrHtml(addr) {
    if (!addr) return "";
    switch (addr.type) {
      case "bound":
        if (!addr.addrs.length) return `<span class="addr none">bound, but no endpoints</span>`;
        return addr.addrs.map(a => {
          const meta = a.meta && Object.keys(a.meta).length ? ` title="${esc(JSON.stringify(a.meta))}"` : "";
          return `<span class="addr"${meta}>${esc(a.ip)}:${esc(a.port)}</span>`;
        }).join("");
      case "neg": return `<span class="addr none">no endpoints (neg)${addr.reason ? ": " + esc(addr.reason) : ""}</span>`;
      case "pending": return `<span class="addr none">pending: the namer has not answered yet</span>`;
      case "failed": return `<span class="addr none">failed: ${esc(addr.cause)}</span>`;
    }
    return "";
  }

  function boundHtml(b, what) {
    if (!b) return "";
    const residual = b.path && b.path !== "/" ? ` <span class="dentry">residual <code>${esc(b.path)}</code></span>` : "";
    return `<div class="bound">${what || "bound to"} <code>${esc(b.id)}</code>${residual}<div>${addrHtml(b.addr)}</div></div>`;
  }

  function why(n) {
    if (n.type === "neg") {
      if (n.reason) return n.reason;
      if (n.path === "~") return "the dtab says ~ (neg): try the next alternative";
      return "no dentry and no namer matched this path";
    }
    if (n.type === "fail") return n.reason || "the dtab says ! (fail): stop, no fallback";
    if (n.type === "exception") return n.message || "evaluation failed";
    if (n.type === "empty") return "$ (empty): resolves to nothing, on purpose";
    return "";
  }

  function render(n, primary, weight, note) {
    const o = outcome(n);
    const cls = ["node", "type-" + n.type, o, primary ? "primary" : "secondary"].join(" ");
    const w = weight !== undefined ? `<span class="weight">${esc(weight)} ×</span>` : "";
    const reason = why(n);
    let head = `${w}<span class="badge">${esc(n.type)}</span> <code class="path">${esc(n.path || "")}</code> ${dentry(n.dentry)}`;
    if (n.type === "transformation") head += ` <span class="dentry">transformed by <code>${esc(n.name)}</code></span>`;
    if (reason) head += ` <span class="why">${esc(reason)}</span>`;
    if (note) head += ` <span class="why">${esc(note)}</span>`;
    let body = "";
    switch (n.type) {
      case "delegate": body = render(n.delegate, primary); break;
      case "leaf": body = boundHtml(n.bound); break;
      case "transformation": body = boundHtml(n.bound, "input") + render(n.tree, primary); break;
      case "alt": {
        let found = false;
        body = n.alt.map(a => {
          const p = primary && !found && outcome(a) !== "neg";
          if (p) found = true;
          return render(a, p, undefined, primary && !p && found ? "not used: an earlier alternative resolved" : "");
        }).join("");
        break;
      }
      case "union": body = n.union.map(u => render(u.tree, primary, u.weight)).join(""); break;
    }
    return `<div class="${cls}" data-type="${esc(n.type)}"><div class="head">${head}</div>${body}</div>`;
  }

  // The primary leaves: where traffic for this name would go now.
  function primaryLeaves(n, out) {
    switch (n.type) {
      case "delegate": primaryLeaves(n.delegate, out); break;
      case "transformation": out.push(n); break;
      case "leaf": out.push(n); break;
      case "alt": { const a = n.alt.find(x => outcome(x) !== "neg"); if (a) primaryLeaves(a, out); break; }
      case "union": n.union.forEach(u => primaryLeaves(u.tree, out)); break;
    }
    return out;
  }

  function summarize(json, path) {
    const o = outcome(json);
    if (o === "success") {
      const leaves = primaryLeaves(json, []).filter(l => outcome(l) === "success");
      return `<div class="summary success"><b>${esc(path)}</b> resolves to ` +
        leaves.map(l => `<code>${esc(l.bound.id)}</code> ${addrHtml(l.bound.addr)}`).join(" and ") + "</div>";
    }
    if (o === "fail") return `<div class="summary fail"><b>${esc(path)}</b> fails: requests get a 502 (see the red branch)</div>`;
    return `<div class="summary neg"><b>${esc(path)}</b> does not resolve (Neg): requests get 502 "Unable to route request!"</div>`;
  }

  function clearErrors() {
    for (const e of [dtabErr, pathErr, resultErr]) e.textContent = "";
    dtabIn.classList.remove("invalid"); pathIn.classList.remove("invalid");
  }

  async function resolve() {
    const path = pathIn.value.trim();
    clearErrors();
    showInterpreter();
    if (!path) { tree.innerHTML = summary.innerHTML = ""; return; }
    const mine = ++seq;
    history.replaceState(null, "", "?router=" + encodeURIComponent(routerSel.value) + "#" + encodeURIComponent(path));
    let rsp, text;
    try {
      rsp = await fetch("/delegator.json", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({namespace: routerSel.value, dtab: dtabIn.value, path: path}),
      });
      text = await rsp.text();
    } catch (e) {
      if (mine === seq) resultErr.textContent = "cannot reach the admin server: " + e.message;
      return;
    }
    if (mine !== seq) return;  // a newer request superseded this one
    if (!rsp.ok) {
      tree.innerHTML = summary.innerHTML = "";
      if (text.startsWith("Invalid dtab")) { dtabErr.textContent = text; dtabIn.classList.add("invalid"); }
      else if (text.startsWith("Invalid path")) { pathErr.textContent = text; pathIn.classList.add("invalid"); }
      else resultErr.textContent = `HTTP ${rsp.status}: ${text}`;
      return;
    }
    const json = JSON.parse(text);
    tree.innerHTML = render(json, true);
    tree.dataset.outcome = outcome(json);
    summary.innerHTML = summarize(json, path);
    showInterpreter();
  }

  function later() { clearTimeout(timer); timer = setTimeout(resolve, 250); }

  // A router bound by namerd (io.l5d.namerd.http, io.l5d.mesh): say so, and whether its
  // streams are up, from /<router>/interpreter_state/<kind>/<namespace>.json.
  async function showInterpreter() {
    const box = $("interp");
    const r = data.routers.find(x => x.label === routerSel.value);
    const it = r && r.interpreter;
    if (!it) { box.innerHTML = ""; box.dataset.connected = ""; return; }
    let st = null;
    try { st = await (await fetch(it.state)).json(); } catch (e) { st = null; }
    const binds = st ? Object.values(st.bind || {}) : [];
    const err = binds.map(b => b.lastError).find(Boolean);
    const up = !!(st && st.connected);
    box.dataset.connected = binds.length ? String(up) : "none";
    box.innerHTML = `Names are bound by namerd: <code>${esc(it.kind)}</code> at ` +
      `<code>${esc(st ? st.namerd : "?")}</code>, namespace <code>${esc(it.namespace)}</code>, ` +
      (!binds.length ? "no name bound yet (streams open with the first request)" :
       up ? "streams connected" : "<b>namerd unreachable: routing on the last good trees</b>") +
      (err ? ` (last error: ${esc(err)})` : "") +
      ` &middot; <a href="${esc(it.state)}">interpreter state</a>`;
  }

  for (const r of data.routers) {
    const opt = document.createElement("option"); opt.value = opt.textContent = r.label;
    routerSel.appendChild(opt);
  }
  const q = new URLSearchParams(location.search);
  if (q.get("router") && data.routers.some(r => r.label === q.get("router"))) routerSel.value = q.get("router");
  dtabIn.value = routerDtab(routerSel.value);
  if (location.hash.length > 1) pathIn.value = decodeURIComponent(location.hash.slice(1));

  routerSel.addEventListener("change", () => { dtabIn.value = routerDtab(routerSel.value); resolve(); });
  showInterpreter();
  $("reset").addEventListener("click", () => { dtabIn.value = routerDtab(routerSel.value); resolve(); });
  $("go").addEventListener("click", resolve);
  pathIn.addEventListener("keydown", e => { if (e.key === "Enter") resolve(); });
  dtabIn.addEventListener("input", later);
  if (pathIn.value) resolve();
})();
