"use strict";
// The dashboard's groups view: one page of groups (50, a filter) with the actors on it, the chats
// waiting to pair, and the form that adds a group. Uses what dashboard.js shares (window.NGBDash);
// everything from the API goes into the page through textContent.
(() => {
  const { api, apiResponse, send, el, td, fmtAge, fmtTime, num, short, banner, state, views, AuthError } = window.NGBDash;
  const refresh = window.NGBDash.refresh;
  const $ = (id) => document.getElementById(id);
  const GROUPS_PAGE = 50;  // groups per page: the dashboard asks for one page, not for 1,000 groups

  async function groups() {
    const q = encodeURIComponent(state.groupsQuery);
    const [page, waiting] = await Promise.all([
      apiResponse(`/api/groups?limit=${GROUPS_PAGE}&offset=${state.groupsFrom}&q=${q}`),
      api("/api/pairings?state=pending")]);
    const list = page.data;
    const total = Number(page.headers.get("X-Total-Count") || list.length);
    if (!list.length && state.groupsFrom > 0 && total > 0) {  // the page emptied (groups removed): back to the last one
      state.groupsFrom = Math.max(0, Math.floor((total - 1) / GROUPS_PAGE) * GROUPS_PAGE);
      return groups();
    }
    const actors = list.length ? await api(`/debug/actors?folders=${list.map((g) => encodeURIComponent(g.folder)).join(",")}`) : [];
    $("groups-count").textContent = `(${num(total)}${state.groupsQuery ? " matching" : ""})`;
    $("groups-range").textContent = total ? `${num(state.groupsFrom + 1)}–${num(state.groupsFrom + list.length)} of ${num(total)}` : "none";
    $("groups-prev").disabled = state.groupsFrom === 0;
    $("groups-next").disabled = state.groupsFrom + list.length >= total;
    const pending = waiting.filter((p) => !p.expired);
    $("pairings").tBodies[0].replaceChildren(...(pending.length ? pending.map((p) => {
      const decide = (action) => el("button", { class: `btn${action === "deny" ? " danger" : ""}`, type: "button",
        text: action, "data-action": action, onclick: async () => {
          try {
            const r = await send("POST", `/api/pairings/${encodeURIComponent(p.code)}/${action}`);
            $("pairing-msg").textContent = action === "approve" ? `${p.chat} is now group ${r.folder}` : `${p.chat} denied`;
          } catch (e) { $("pairing-msg").textContent = e.message; }
          await groups();
        } });
      return el("tr", { "data-code": p.code }, td(p.code, "mono"), td(p.chat, "mono"),
        td(p.sender_id ? `${p.sender} (${p.sender_id})` : p.sender), td(fmtTime(p.created)),
        el("td", {}, decide("approve"), decide("deny")));
    }) : [el("tr", {}, el("td", { colSpan: 5, class: "muted", text: "nobody is waiting" }))]));
    const byFolder = Object.fromEntries(actors.map((a) => [a.folder, a]));
    $("groups-table").tBodies[0].replaceChildren(...list.map((g) => {
      const a = byFolder[g.folder] || {};
      const link = el("a", { href: `#group/${encodeURIComponent(g.folder)}`, text: g.folder });
      return el("tr", { "data-folder": g.folder },
        el("td", {}, link, g.is_main ? el("span", { class: "pill", text: "main" }) : null),
        td(g.chat, "mono"),
        el("td", { class: "web" }, el("span", { text: g.web_effective || "", "data-web": g.web_effective || "" }),
           g.web ? null : el("span", { class: "muted", text: " (default)" })),
        el("td", { class: "state", "data-state": a.state || "" }, el("span", { text: a.state || "-", "data-state": a.state || "" })),
        td(a.inbox_depth ?? ""),
        td(a.unanswered_messages != null ? `${a.unanswered_messages}${a.oldest_message_age_seconds != null ? ` (oldest ${fmtAge(a.oldest_message_age_seconds)})` : ""}` : ""),
        td(a.container_id ? `${a.container_id} · ${fmtAge(a.container_age_seconds)}` : "", "mono"),
        td(short(a.session_id), "mono"), td(a.turns ?? ""), td(a.crash_count ? `${a.crash_count}: ${a.last_crash}` : "0"));
    }));
  }
  $("groups-prev").addEventListener("click", () => { state.groupsFrom = Math.max(0, state.groupsFrom - GROUPS_PAGE); refresh(true); });
  $("groups-next").addEventListener("click", () => { state.groupsFrom += GROUPS_PAGE; refresh(true); });
  $("groups-filter").addEventListener("input", () => {
    state.groupsQuery = $("groups-filter").value.trim();
    state.groupsFrom = 0;
    refresh(true);
  });
  $("add-group").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await send("POST", "/api/groups", { chat: $("add-chat").value.trim(), folder: $("add-folder").value.trim(),
                                           requires_trigger: !$("add-notrigger").checked });
      $("add-group").reset();
      banner("");
      refresh(true);
    } catch (e) { if (!(e instanceof AuthError)) banner(e.message); }
  });

  views.groups = groups;
})();
