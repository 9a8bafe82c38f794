"use strict";
// The overview's activity charts over GET /api/activity (docs/api.md, "Activity"): small inline
// SVG bars, no chart library, nothing from elsewhere. Data goes into the page through
// textContent/setAttribute only. Refreshed every 30 s while the overview is shown, and at once
// when the range or the group changes.
(() => {
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const W = 480, H = 130, LEFT = 44, BOTTOM = 16, REFRESH_MS = 30000;
  const num = (v) => String(v);
  const CHARTS = [
    { name: "messages", label: "Messages", parts: [["messages_in", "in", "var(--accent)"], ["messages_out", "out", "var(--ok)"]], fmt: num },
    { name: "turns", label: "Turns", parts: [["turns", "turns", "var(--accent)"], ["failed_turns", "failed", "var(--bad)"]], fmt: num },
    { name: "latency", label: "Reply latency (mean)", parts: [["reply_avg_s", "s", "var(--warn)"]], fmt: (v) => v.toFixed(2) + " s" },
    { name: "spend", label: "Spend", parts: [["cost_usd", "USD", "var(--accent)"]], fmt: (v) => "$" + (v < 1 ? v.toFixed(4) : v.toFixed(2)) },
  ];
  let loadedAt = 0, loading = false, wanted = "";

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function totals(series) {
    const sum = (k) => series.reduce((a, b) => a + (b[k] || 0), 0);
    const replies = sum("replies");
    const weighted = series.reduce((a, b) => a + (b.reply_avg_s || 0) * (b.replies || 0), 0);
    return {
      messages_in: sum("messages_in"), messages_out: sum("messages_out"), turns: sum("turns"),
      failed_turns: sum("failed_turns"), replies, cost_usd: Math.round(sum("cost_usd") * 1e6) / 1e6,
      reply_avg_s: replies ? Math.round((weighted / replies) * 1000) / 1000 : null,
      reply_max_s: Math.max(0, ...series.map((b) => b.reply_max_s || 0)),
    };
  }

  function caption(chart, t) {
    if (chart.name === "messages") return `${t.messages_in} in · ${t.messages_out} out`;
    if (chart.name === "turns") return `${t.turns} turns · ${t.failed_turns} failed`;
    if (chart.name === "latency") return t.reply_avg_s == null ? "no replies" : `mean ${t.reply_avg_s.toFixed(2)} s · worst ${t.reply_max_s.toFixed(2)} s`;
    return chart.fmt(t.cost_usd);
  }

  function draw(chart, series, t) {
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.chart = chart.name;
    const values = series.flatMap((b) => chart.parts.map(([k]) => b[k] || 0));
    const max = Math.max(...values, 0);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${chart.label}: ${caption(chart, t)}` });
    const base = H - BOTTOM, top = 8;
    root.append(svg("line", { x1: LEFT, y1: base, x2: W, y2: base, stroke: "var(--line)" }));
    root.append(svg("text", { x: LEFT - 4, y: top + 8, "text-anchor": "end", class: "axis" }, max ? chart.fmt(max) : "0"));
    const slot = (W - LEFT) / Math.max(1, series.length);
    const barW = Math.max(1, slot / chart.parts.length - 1);
    series.forEach((b, i) => chart.parts.forEach(([k, label, color], j) => {
      const v = b[k];
      if (!v) return;
      const h = Math.max(1, (v / max) * (base - top));
      const bar = svg("rect", { x: LEFT + i * slot + j * (barW + 0.5), y: base - h, width: barW, height: h, fill: color,
                                "data-key": k, "data-bucket": b.bucket, "data-value": v });
      bar.append(svg("title", {}, `${b.bucket}: ${chart.fmt(v)}${label === "s" || label === "USD" ? "" : " " + label}`));
      root.append(bar);
    }));
    if (series.length) {
      root.append(svg("text", { x: LEFT, y: H - 2, class: "axis" }, series[0].bucket));
      root.append(svg("text", { x: W, y: H - 2, "text-anchor": "end", class: "axis" }, series[series.length - 1].bucket));
    }
    const cap = document.createElement("figcaption");
    const strong = document.createElement("strong");
    strong.textContent = chart.label;
    cap.append(strong, " ", caption(chart, t));
    fig.append(root, cap);
    return fig;
  }

  async function getJson(path) {
    const res = await fetch(path, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return res.json();
  }

  async function groupsPicker() {
    const select = $("activity-group");
    if (select.dataset.loaded) return;
    const groups = await getJson("/api/groups");
    for (const g of groups) select.append(new Option(g.folder, g.folder));
    select.dataset.loaded = "1";
  }

  async function load() {
    if (loading) return;
    loading = true;
    const query = `${$("activity-range").value}${$("activity-group").value ? "&group=" + encodeURIComponent($("activity-group").value) : ""}`;
    try {
      await groupsPicker();
      const data = await getJson(`/api/activity?${query}`);
      const t = totals(data.series);
      const box = $("charts");
      box.replaceChildren(...CHARTS.map((c) => draw(c, data.series, t)));
      box.dataset.totals = JSON.stringify(t);
      box.dataset.query = query;
      loadedAt = Date.now();
      wanted = query;
    } catch (e) {
      $("charts").dataset.error = e.message;  // the dashboard's own banner reports auth and outages
    } finally {
      loading = false;
    }
  }

  function tick() {
    const view = $("view-overview");
    if (!view || view.hidden || document.hidden) return;
    const query = `${$("activity-range").value}${$("activity-group").value ? "&group=" + encodeURIComponent($("activity-group").value) : ""}`;
    if (query !== wanted || Date.now() - loadedAt > REFRESH_MS) load();
  }
  document.addEventListener("DOMContentLoaded", () => {
    $("activity-range").addEventListener("change", load);
    $("activity-group").addEventListener("change", load);
    setInterval(tick, 1000);
    tick();
  });
})();
