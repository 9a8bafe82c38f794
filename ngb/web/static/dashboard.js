"use strict";
// NanoGridBot dashboard: hash-routed views over the JSON API, refreshed every second while the
// tab is visible. Everything from the API goes into the page through textContent.
(() => {
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 1000;
  const state = { view: null, arg: null, timer: null, busy: false, group: null, older: null,
                  search: null, runsFor: null, needLogin: false, gen: 0, groupsFrom: 0, groupsQuery: "" };

  class AuthError extends Error {}

  async function api(path, opts = {}) {
    return (await apiResponse(path, opts)).data;
  }
  async function apiResponse(path, opts = {}) {
    const res = await fetch(path, {
      credentials: "same-origin", cache: "no-store", ...opts,
      headers: { Accept: "application/json", ...(opts.body !== undefined ? { "Content-Type": "application/json" } : {}) },
    });
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    if (res.status === 401) { askLogin(); throw new AuthError("unauthorized"); }
    if (!res.ok && !(opts.allow || []).includes(res.status)) throw new Error((data && data.error) || `${res.status}`);
    return { data, headers: res.headers };
  }
  const send = (method, path, body) => api(path, { method, body: JSON.stringify(body ?? {}) });

  // -------------------------------------------------------------- small DOM helpers
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "onclick") node.addEventListener("click", v);
      else node[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const td = (text, cls) => el("td", { text: text ?? "", class: cls || "" });
  const fmtAge = (s) => s == null ? "" : s < 60 ? `${s.toFixed(1)}s` : s < 3600 ? `${Math.floor(s / 60)}m ${Math.round(s % 60)}s` : `${(s / 3600).toFixed(1)}h`;
  const fmtTime = (iso) => iso ? new Date(iso).toLocaleString() : "";
  const usd = (n) => n == null ? "none" : n === 0 || n >= 0.01 ? `$${n.toFixed(2)}` : `$${n.toPrecision(2)}`;
  const num = (n) => (n ?? 0).toLocaleString();
  const short = (s, n = 12) => s ? (s.length > n ? s.slice(0, n) + "…" : s) : "";
  function banner(text) { $("banner").hidden = !text; $("banner-text").textContent = text || ""; }
  function live(ok) { $("live").dataset.state = ok ? "live" : "error"; }

  // -------------------------------------------------------------- login
  function askLogin() {
    if (state.needLogin) return;
    state.needLogin = true;
    $("login-error").textContent = "";
    if (!$("login").open) $("login").showModal();
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await fetch("/api/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("token").value }) });
    if (!res.ok) {
      let msg = "That token is not right.";
      if (res.status === 429) { try { msg = (await res.json()).error || msg; } catch { /* keep it */ } }
      $("login-error").textContent = msg; return;
    }
    state.needLogin = false;
    $("login").close();
    $("token").value = "";
    refresh(true);
  });

  // -------------------------------------------------------------- overview
  async function overview() {
    const [health, status, actors] = await Promise.all([
      api("/healthz", { allow: [503] }), api("/status?brief=1"), api("/debug/actors?active=1")]);
    $("health").textContent = health.ok ? "OK" : "DOWN";
    $("health").dataset.ok = String(!!health.ok);
    $("health-reason").textContent = health.reason || "";
    $("containers").textContent = `${status.containers.live} / ${status.containers.cap}`;
    $("outbox").textContent = status.queues.outbox ?? "?";
    $("outbox-detail").textContent = `${status.queues.outbox_failed ?? "?"} failed · ${status.outbox_retries} retries · ${status.delivered} delivered`;
    $("version").textContent = status.version;
    $("uptime").textContent = `up ${fmtAge(status.uptime_seconds)}`;
    $("channels").replaceChildren(...Object.entries(status.channels).map(([name, c]) =>
      el("tr", { "data-channel": name }, td(name), el("td", {}, el("span", { text: c.state, "data-state": c.state })))));
    pairing(Object.keys(status.channels).find((name) => status.channels[name].state === "qr"));
    const running = actors.filter((a) => a.container_id);
    $("live-containers").replaceChildren(...(running.length ? running.map((a) =>
      el("tr", { "data-folder": a.folder }, td(a.folder), td(a.container_id, "mono"), td(fmtAge(a.container_age_seconds)),
         el("td", {}, el("span", { class: "pill", text: a.state, "data-state": a.state })))) :
      [el("tr", {}, el("td", { colSpan: 4, class: "muted", text: "no container running" }))]));
    $("last-error").textContent = status.last_error || "none";
    usage(status.usage);
  }
  // A channel waiting for a QR scan (WhatsApp): show the code; it rotates, so reload it every few seconds.
  const QR_RELOAD_MS = 4000;
  function pairing(name) {
    const img = $("pairing-qr");
    $("pairing").hidden = !name;
    if (!name) { state.qrAt = 0; img.removeAttribute("src"); return; }
    $("pairing-name").textContent = name;
    if (!state.qrAt || Date.now() - state.qrAt >= QR_RELOAD_MS) {
      state.qrAt = Date.now();
      img.src = `/api/channels/${encodeURIComponent(name)}/qr.svg?t=${state.qrAt}`;
    }
  }
  function usage(u) {
    if (!u) return;
    const t = u.total;
    $("spend-today").textContent = usd(t.today.cost_usd) + (t.daily_cap_usd ? ` / ${usd(t.daily_cap_usd)}` : "");
    $("spend-month").textContent = `${usd(t.month.cost_usd)} this month${t.monthly_cap_usd ? ` of ${usd(t.monthly_cap_usd)}` : ""} · ${t.today.requests} calls today`;
    $("usage-day").textContent = `(UTC day ${u.day})`;
    const row = (name, s, label) => el("tr", { "data-folder": name },
      td(label || name), td(usd(s.today.cost_usd), "spend-today"), td(num(s.today.requests)),
      td(`${num(s.today.input_tokens)} / ${num(s.today.output_tokens)}`, "mono"),
      td(`${num(s.today.cache_read_tokens)} / ${num(s.today.cache_creation_tokens)}`, "mono"),
      td(usd(s.month.cost_usd), "spend-month"), td(`${usd(s.daily_cap_usd)} / ${usd(s.monthly_cap_usd)}`),
      el("td", { class: "budget" }, el("span", { class: "pill", "data-state": s.blocked ? "blocked" : "ok",
        text: s.blocked ? `${s.blocked.replace("_", " ")} cap reached` : "ok" })));
    $("usage").replaceChildren(...Object.entries(u.groups).map(([name, s]) => row(name, s)), row("*", t, "all groups"));
    const more = (u.groups_total ?? 0) - (u.groups_listed ?? 0);
    $("usage-more").hidden = more <= 0;
    $("usage-more").textContent = more > 0 ? `The ${u.groups_listed} groups that spent most this month; ${more} more in the API (/status, /api/usage).` : "";
  }

  // -------------------------------------------------------------- one group
  function kv(dl, rows) {
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v ?? "–" })]));
  }
  function treeText(node, depth = 0) {
    if (!node) return "";
    return "  ".repeat(depth) + node.name + "\n" + (node.children || []).map((c) => treeText(c, depth + 1)).join("");
  }
  async function group(folder, first) {
    const actor = await api(`/debug/actors/${encodeURIComponent(folder)}`);
    $("group-title").textContent = folder;
    $("actor-state").textContent = actor.state;
    $("actor-state").dataset.state = actor.state;
    kv($("actor"), [
      ["chat", actor.chat], ["state", actor.state], ["inbox", String(actor.inbox_depth)],
      ["unanswered", `${actor.unanswered_messages ?? "?"}${actor.oldest_message_age_seconds != null ? `, oldest ${fmtAge(actor.oldest_message_age_seconds)}` : ""}`],
      ["container", actor.container_id ? `${actor.container_id} (${fmtAge(actor.container_age_seconds)})` : null],
      ["session", actor.session_id || actor.stored_session_id],
      ["current turn", actor.current_turn ? `up to message ${actor.current_turn.up_to_message}, ${fmtAge(actor.current_turn.running_seconds)}` : null],
      ["turns / replies", `${actor.turns} / ${actor.replies}`], ["last turn error", actor.last_turn_error],
      ["crashes", String(actor.crash_count)], ["last crash", actor.last_crash ? `${actor.last_crash} at ${fmtTime(actor.last_crash_at)}` : null],
    ]);
    $("actor-tree").textContent = treeText(actor.task_tree);
    if (first) {
      const g = await api(`/api/groups/${encodeURIComponent(actor.chat)}`);
      state.group = g;
      $("set-trigger").value = g.trigger || "";
      $("set-trigger").placeholder = `(daemon default: ${g.effective_trigger})`;
      $("set-requires").checked = g.requires_trigger;
      $("set-senders").value = (g.allowed_senders || []).join("\n");
      $("set-unlisted").checked = !!g.unlisted_context;
      $("set-web").value = g.web || "";
      $("set-web").options[0].textContent = `(daemon default: ${g.is_main ? "main group" : "groups"})`;
      $("set-web-allow").value = (g.web_allow || []).join("\n");
      $("set-web-deny").value = (g.web_deny || []).join("\n");
      $("set-threads").value = g.threads || "";
      $("set-previews").value = g.previews == null ? "" : g.previews ? "on" : "off";
      await loadSenders();
      $("settings-msg").textContent = ""; $("session-msg").textContent = "";
      state.search = null; $("search-q").value = ""; $("search-info").textContent = "";
      await loadMessages(true);
    } else if (!state.search) {
      await loadMessages(false);
    }
    await loadWeb();
  }
  // The group's web mode and its last requests through the egress door, with today's sums (UTC).
  const fmtSize = (n) => n < 1024 ? `${n ?? 0} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
  async function loadWeb() {
    const g = state.group;
    const w = await api(`/api/web?group=${encodeURIComponent(g.folder)}&limit=10&days=1`);
    $("web-mode").textContent = g.web_effective;
    $("web-mode").dataset.web = g.web_effective;
    const today = w.usage.find((u) => u.day === w.day);
    $("web-summary").textContent = `${g.web ? "its own setting" : "the daemon's default"} · today: ` + (today
      ? `${num(today.requests)} request${today.requests === 1 ? "" : "s"}, ${num(today.refused)} refused, ${fmtSize(today.bytes_up)} up / ${fmtSize(today.bytes_down)} down`
      : "no requests");
    $("web-recent").tBodies[0].replaceChildren(...(w.recent.length ? w.recent.map((r) =>
      el("tr", { "data-verdict": r.verdict }, td(fmtTime(r.time)), td(r.verdict, "verdict"),
         td(`${r.method === "CONNECT" ? "" : r.method + " "}${r.host}:${r.port}`, "mono host"),
         td(`${fmtSize(r.bytes_up)} / ${fmtSize(r.bytes_down)}`), td(r.rule, "rule"))) :
      [el("tr", {}, el("td", { colSpan: 5, class: "muted", text: "no web requests yet" }))]));
  }
  async function loadSenders() {
    const rows = await api(`/api/senders?chat=${encodeURIComponent(state.group.chat)}`);
    $("senders").replaceChildren(...rows.map((s) => {
      const add = el("button", { class: "btn", type: "button", text: "allow" });
      add.hidden = s.allowed !== false;
      add.addEventListener("click", () => {
        const box = $("set-senders");
        const ids = box.value.split("\n").map((x) => x.trim()).filter(Boolean);
        if (!ids.includes(s.sender_id)) box.value = [...ids, s.sender_id].join("\n");
      });
      return el("tr", {}, el("td", { class: "mono", text: s.sender_id || "(none)" }), el("td", { text: s.name }),
        el("td", { text: String(s.messages) }), el("td", { text: s.allowed == null ? "-" : (s.allowed ? "yes" : "no") }), el("td", {}, add));
    }));
  }
  function fmtBytes(n) {
    return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
  }
  function renderMessage(m, words) {
    const text = el("div", { class: "text" });
    if (words && words.length) highlight(text, m.text, words); else text.textContent = m.text;
    const files = (m.attachments || []).map((a) => a.gone
      ? el("span", { class: "file gone", text: `${a.kind}: ${a.name} (no longer kept)` })
      : el("a", { class: "file", href: a.url, target: "_blank", rel: "noopener", text: `${a.kind}: ${a.name} (${fmtBytes(a.size)})` }));
    return el("li", { class: "msg" + (m.from_bot ? " bot" : ""), "data-id": String(m.id) },
      el("div", { class: "meta", text: `${m.sender} · ${fmtTime(m.time)} · #${m.id}` }), text,
      ...(files.length ? [el("div", { class: "files" }, ...files)] : []));
  }
  function highlight(node, text, words) {
    const lower = text.toLowerCase();
    let i = 0;
    while (i < text.length) {
      let best = -1, len = 0;
      for (const w of words) { const j = lower.indexOf(w, i); if (j >= 0 && (best < 0 || j < best)) { best = j; len = w.length; } }
      if (best < 0) { node.append(text.slice(i)); break; }
      node.append(text.slice(i, best), el("mark", { text: text.slice(best, best + len) }));
      i = best + len;
    }
  }
  async function loadMessages(reset) {
    const chat = state.group.chat;
    if (reset) {
      const page = await api(`/api/messages?chat=${encodeURIComponent(chat)}&limit=50`);
      $("messages").replaceChildren(...page.messages.map((m) => renderMessage(m)));
      state.older = page.next_before; $("older").hidden = !state.older;
      return;
    }
    const list = $("messages");
    const lastId = list.lastElementChild ? Number(list.lastElementChild.dataset.id) : 0;
    const page = await api(`/api/messages?chat=${encodeURIComponent(chat)}&limit=50`);
    for (const m of page.messages) if (m.id > lastId) list.append(renderMessage(m));
    if (!list.firstElementChild) { state.older = page.next_before; $("older").hidden = !state.older; }
  }
  $("older").addEventListener("click", async () => {
    if (state.search) return runSearch(state.search.next_offset);
    const page = await api(`/api/messages?chat=${encodeURIComponent(state.group.chat)}&limit=50&before=${state.older}`);
    $("messages").prepend(...page.messages.map((m) => renderMessage(m)));
    state.older = page.next_before; $("older").hidden = !state.older;
  });
  async function runSearch(offset) {
    const q = $("search-q").value.trim();
    if (!q) { state.search = null; return loadMessages(true); }
    const r = await api(`/api/search?q=${encodeURIComponent(q)}&chat=${encodeURIComponent(state.group.chat)}&limit=20&offset=${offset || 0}`);
    const words = q.toLowerCase().split(/\s+/).filter(Boolean);
    const items = r.messages.map((m) => renderMessage(m, words));
    if (offset) $("messages").append(...items); else $("messages").replaceChildren(...items);
    state.search = r;
    $("search-info").textContent = `${r.total}${r.total_exact === false ? "+" : ""} message${r.total === 1 ? "" : "s"} match “${q}”`;
    $("older").hidden = r.next_offset == null;
    $("older").textContent = r.next_offset == null ? "Older…" : "More results…";
  }
  $("search").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(0).catch(showError); });
  $("search-clear").addEventListener("click", () => {
    $("search-q").value = ""; state.search = null; $("search-info").textContent = ""; $("older").textContent = "Older…";
    loadMessages(true).catch(showError);
  });
  $("settings").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
      const g = await send("PATCH", `/api/groups/${encodeURIComponent(state.group.chat)}`, {
        trigger: $("set-trigger").value.trim() || null, requires_trigger: $("set-requires").checked,
        allowed_senders: lines("set-senders"), unlisted_context: $("set-unlisted").checked,
        web: $("set-web").value || null, web_allow: lines("set-web-allow"), web_deny: lines("set-web-deny"),
        threads: $("set-threads").value || null,
        previews: $("set-previews").value === "" ? null : $("set-previews").value === "on" });
      state.group = g;
      $("set-web-allow").value = g.web_allow.join("\n");
      $("set-web-deny").value = g.web_deny.join("\n");
      await loadSenders();
      await loadWeb();
      $("settings-msg").textContent = "saved";
    } catch (e) { $("settings-msg").textContent = e.message; }
  });
  $("reset-session").addEventListener("click", async () => {
    if (!confirm("Forget this group's conversation? The next message starts a fresh session.")) return;
    try {
      const r = await send("DELETE", `/api/sessions/${encodeURIComponent(state.group.folder)}`);
      $("session-msg").textContent = r.reset ? "session reset" : "there was no session";
    } catch (e) { $("session-msg").textContent = e.message; }
  });

  // -------------------------------------------------------------- tasks
  async function tasks() {
    const got = await api("/api/tasks");
    const list = Array.isArray(got) ? got : got.tasks;
    $("tasks-empty").hidden = list.length > 0;
    $("tasks-table").tBodies[0].replaceChildren(...list.map((t) => {
      const actions = el("td", {});
      const act = (label, cls, fn) => actions.append(el("button", { class: `btn ${cls}`, type: "button", text: label, onclick: fn }));
      if (t.status === "active") act("Pause", "pause", () => taskAction(t.id, "pause"));
      if (t.status === "paused") act("Resume", "resume", () => taskAction(t.id, "resume"));
      if (t.status === "active" || t.status === "paused") act("Cancel", "cancel danger", () => {
        if (confirm(`Cancel task ${t.id}?`)) taskAction(t.id, "cancel");
      });
      act("Run log", "runs-btn", () => { state.runsFor = t.id; runs().catch(showError); });
      const counts = t.runs ? Object.entries(t.runs).map(([k, v]) => `${v} ${k}`).join(", ") :
        (t.last_run ? `last ${fmtTime(t.last_run)}${t.last_result ? `: ${short(t.last_result, 40)}` : ""}` : "");
      return el("tr", { "data-task": t.id }, td(t.id, "mono"), td(t.folder), td(`${t.schedule_kind} ${t.schedule_value} (${t.timezone})`, "mono"),
        el("td", { class: "status", "data-status": t.status, text: t.status }), td(fmtTime(t.next_run)), td(counts || "none yet"),
        td(short(t.prompt, 80)), actions);
    }));
    if (state.runsFor) await runs();
  }
  async function taskAction(id, action) {
    try {
      if (action === "cancel") await send("DELETE", `/api/tasks/${encodeURIComponent(id)}`);
      else await send("POST", `/api/tasks/${encodeURIComponent(id)}/${action}`);
      banner("");
      await tasks();
    } catch (e) { showError(e); }
  }
  async function runs() {
    const r = await api(`/api/tasks/${encodeURIComponent(state.runsFor)}/runs?limit=50`);
    $("runs").hidden = false;
    $("runs-title").textContent = state.runsFor;
    $("runs-body").replaceChildren(...(r.runs.length ? r.runs.map((x) =>
      el("tr", { "data-outcome": x.outcome }, td(fmtTime(x.started_at)), td(fmtTime(x.ended_at)), td(x.outcome), td(x.error || ""))) :
      [el("tr", {}, el("td", { colSpan: 4, class: "muted", text: "no runs yet" }))]));
  }

  // -------------------------------------------------------------- routing and refresh
  function showError(e) { if (!(e instanceof AuthError)) { banner(e.message); live(false); } }
  function route() {
    const [view, ...rest] = (location.hash.replace(/^#/, "") || "overview").split("/");
    const known = ["overview", "groups", "group", "tasks"];
    state.view = known.includes(view) ? view : "overview";
    state.arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
    state.gen++;
    state.runsFor = null; $("runs").hidden = true;
    for (const v of known) $(`view-${v}`).hidden = v !== state.view;
    for (const a of document.querySelectorAll("#nav a[data-view]")) {
      const on = a.dataset.view === state.view || (state.view === "group" && a.dataset.view === "groups");
      if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    refresh(true);
  }
  async function refresh(first = false) {
    if (state.busy && !first) return;
    state.busy = true;
    const gen = state.gen;
    try {
      if (state.view === "overview") await overview();
      else if (state.view === "groups") await views.groups();
      else if (state.view === "group") await group(state.arg, first);
      else if (state.view === "tasks") await tasks();
      if (gen === state.gen) { live(true); if (!state.needLogin) banner(""); }
    } catch (e) { showError(e); } finally { state.busy = false; }
  }
  // The views in files of their own (dashboard-groups.js) get these; they run after this one
  // (deferred scripts, in order), so the first route waits for DOMContentLoaded.
  const views = {};
  window.NGBDash = { api, apiResponse, send, el, td, fmtAge, fmtTime, num, short, banner, state, views, AuthError,
                     refresh: (first) => refresh(first) };
  window.addEventListener("hashchange", route);
  setInterval(() => { if (!document.hidden && !state.needLogin) refresh(); }, REFRESH_MS);
  document.addEventListener("DOMContentLoaded", route);
})();
