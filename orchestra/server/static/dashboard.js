// Orchestra's dashboard: polls the server's JSON routes and draws them. No build step, no CDN:
// plain DOM, and uPlot (vendored) for the charts. Text from the server is only ever set as text.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "orchestra-token";
const HISTORY_ROWS = 15;
const TIERS = ["local", "edge", "cloud"];

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let polling = null;
let modelsShown = "";
const charts = {};

class Unauthorized extends Error {}

// -- talking to the server --------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) throw new Unauthorized("a token is needed");
  return response;
}

async function getJSON(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// -- small helpers ----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function usd(x) {
  if (x === null || x === undefined) return "–";
  if (x === 0) return "$0";
  return Math.abs(x) >= 1 ? `$${x.toFixed(2)}` : `$${x.toFixed(x >= 0.01 ? 3 : 6)}`;
}

function usdTick(x) {
  return x === 0 ? "$0" : `$${Number(x.toPrecision(3))}`;
}

function ms(x) {
  if (x === null || x === undefined) return "–";
  return x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`;
}

function pct(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0)} %`;
}

function ago(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return new Date(ts * 1000).toLocaleString();
}

function duration(s) {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function tier(name) {
  return name ? h("span", { class: `tier tier-${name}` }, name) : h("span", { class: "muted" }, "–");
}

function stateClass(state) {
  if (["ok", "clean", "simple", "connected", "closed", "no_budget", "local_only"].includes(state)) return "ok";
  if (["open", "offline", "critical", "over_budget", "error", "timeout", "no_memory", "sensitive"].includes(state)) return "bad";
  return "warn";
}

function badge(text, cls) {
  return h("span", { class: `badge ${cls || stateClass(text)}` }, text);
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(
    ...(rows.length ? rows : [h("tr", { class: "empty" }, h("td", { colspan: columns }, emptyText))]),
  );
}

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// -- the stat tiles ---------------------------------------------------------------------------

function meter(spent, limit, alertShare) {
  if (!limit) return null;
  const share = spent / limit;
  const cls = share >= 1 ? "bad" : share >= alertShare ? "warn" : "";
  const bar = h("span", { class: cls });
  bar.style.width = `${Math.min(100, 100 * share)}%`;  // CSSOM: the page's CSP allows no inline style
  return h("div", { class: "meter" }, bar);
}

function stat(label, value, sub, extra) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    h("div", { class: "sub" }, sub || "\u00a0"), extra);
}

function renderStats(status, samples) {
  const { budget, spend } = status;
  const alert = budget.alert_share ?? 0.8;
  const requests = samples.filter((s) => s.name === "orchestra_requests_total");
  const served = requests.reduce((n, s) => n + s.value, 0);
  const failed = requests.filter((s) => s.labels.status !== "ok").reduce((n, s) => n + s.value, 0);
  const inFlight = samples.find((s) => s.name === "orchestra_requests_in_flight");
  document.getElementById("stats").replaceChildren(
    stat("Spend today", usd(spend.today_usd),
      budget.daily_usd ? `of ${usd(budget.daily_usd)} daily budget` : "no daily budget",
      meter(spend.today_usd, budget.daily_usd, alert)),
    stat("This month", usd(spend.month_usd),
      budget.monthly_usd ? `of ${usd(budget.monthly_usd)} monthly budget` : "no monthly budget",
      meter(spend.month_usd, budget.monthly_usd, alert)),
    stat("Last hour", usd(spend.last_hour_usd), `${usd(spend.reserved_usd)} held by calls in flight`),
    stat("Requests", String(served), `${failed} failed · ${inFlight ? inFlight.value : 0} in flight`),
    stat("Uptime", duration(status.uptime_s), `pid ${status.pid}`),
  );
}

// -- charts -----------------------------------------------------------------------------------

function dayStart(key) {
  const [y, m, d] = key.split("-").map(Number);
  return new Date(y, m - 1, d).getTime() / 1000;
}

function axisSize(u, values) {
  return values ? 16 + 7 * Math.max(3, ...values.map((v) => v.length)) : 50;
}

function chartOptions(el, series, pad) {
  return {
    width: Math.max(200, el.clientWidth),
    height: 180,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: (u, min, max) => [min - pad, max + pad] },
      y: { range: (u, min, max) => [0, Math.max(max, 1e-6) * 1.15] },
    },
    axes: [
      { stroke: "#656d76", grid: { stroke: "#eef0f2" } },
      { stroke: "#656d76", grid: { stroke: "#eef0f2" }, size: axisSize, values: (u, ticks) => ticks.map(usdTick) },
    ],
    series: [{}, ...series],
  };
}

function drawChart(id, series, data, pad = 0) {
  const el = document.getElementById(id);
  const key = series.map((s) => s.label).join("|");
  if (charts[id] && charts[id].key === key) {
    charts[id].plot.setData(data);
    return;
  }
  if (charts[id]) charts[id].plot.destroy();
  charts[id] = { key, plot: new uPlot(chartOptions(el, series, pad), data, el) };
}

// Bars sit at the middle of their day or hour; the x scale is padded by half a bar each side.
const bars = () => uPlot.paths.bars({ size: [0.7, 40] });
const spendValue = (u, v) => (v === null || v === undefined ? "–" : usd(v));
const budgetSeries = (label) => ({ label, stroke: "#cf222e", dash: [6, 4], width: 1.5, points: { show: false }, value: spendValue });

function renderCharts(spend) {
  const budget = spend.budget;
  const monthFirst = spend.days[spend.days.length - 1].day.slice(0, 8) + "01";
  const month = spend.days.filter((d) => d.day >= monthFirst);
  let sum = 0;
  const toDate = month.map((d) => (sum += d.cost_usd));
  const monthSeries = [{ label: "spent", stroke: "#0969da", fill: "rgba(9,105,218,.12)", width: 2, value: spendValue }];
  const monthData = [month.map((d) => dayStart(d.day)), toDate];
  if (budget.monthly_usd) {
    monthSeries.push(budgetSeries("monthly budget"));
    monthData.push(month.map(() => budget.monthly_usd));
  }
  drawChart("chart-month", monthSeries, monthData, 43200);

  const daySeries = [{ label: "per day", stroke: "#8250df", fill: "rgba(130,80,223,.35)", paths: bars(), points: { show: false }, value: spendValue }];
  const dayData = [spend.days.map((d) => dayStart(d.day) + 43200), spend.days.map((d) => d.cost_usd)];
  if (budget.daily_usd) {
    daySeries.push(budgetSeries("daily budget"));
    dayData.push(spend.days.map(() => budget.daily_usd));
  }
  drawChart("chart-days", daySeries, dayData, 43200);

  const hourSeries = [{ label: "per hour", stroke: "#1a7f37", fill: "rgba(26,127,55,.35)", paths: bars(), points: { show: false }, value: spendValue }];
  const hourData = [spend.hours.map((x) => dayStart(x.day) + 3600 * x.hour + 1800), spend.hours.map((x) => x.cost_usd)];
  drawChart("chart-hours", hourSeries, hourData, 1800);
}

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(charts)) {
    chart.plot.setSize({ width: Math.max(200, document.getElementById(id).clientWidth), height: 180 });
  }
});

// -- agents, models, decisions ----------------------------------------------------------------

function metricText(value) {
  if (typeof value === "number") return String(Number.isInteger(value) ? value : Number(value.toPrecision(3)));
  if (value === null) return "–";
  return Array.isArray(value) ? value.join(", ") || "none" : String(value);
}

// Scalars (and flat lists) only: nested metrics (per-endpoint probes) are the CLI's `--json`.
function shownMetrics(metrics) {
  const flat = Object.entries(metrics || {}).filter(
    ([, v]) => v === null || typeof v !== "object" || (Array.isArray(v) && v.every((x) => typeof x !== "object")));
  return flat.slice(0, 6);
}

function renderAgents(agents) {
  document.getElementById("agents").replaceChildren(
    ...agents.map((v) => {
      const metrics = shownMetrics(v.metrics);
      const allowed = TIERS.filter((t) => (v.allowed || []).includes(t));
      return h("div", { class: "agent", "data-agent": v.agent },
        h("header", {}, h("span", { class: "name" }, v.agent), badge(v.stale ? `${v.state} (stale)` : v.state, stateClass(v.state))),
        h("div", { class: "reason" }, v.reason || h("span", { class: "muted" }, "no reason given")),
        h("div", { class: "small muted" }, "votes ", tier(v.target), ` · confidence ${v.confidence.toFixed(2)} · allows ${allowed.join(", ") || "nothing"}`),
        metrics.length ? h("dl", {}, metrics.map(([k, val]) => [h("dt", {}, k), h("dd", {}, metricText(val))])) : null);
    }),
  );
}

function healthCell(health) {
  if (!health || health.healthy === null || health.healthy === undefined) return h("span", { class: "muted" }, "not checked");
  if (health.healthy) return [badge("up", "ok"), health.latency_ms !== null ? ` ${ms(health.latency_ms)}` : ""];
  return h("span", { title: health.error || "" }, badge("down", "bad"));
}

function renderModels(data, status) {
  const tbody = document.querySelector("#models tbody");
  const rows = data.models.map((m) => h("tr", { "data-model": m.name },
    h("td", {}, m.name, m.in_catalog ? null : h("span", { class: "muted small" }, " (removed)")),
    h("td", {}, tier(m.tier)),
    h("td", {}, healthCell(m.health)),
    h("td", {}, m.breaker ? badge(m.breaker) : h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, String(m.calls), m.skipped ? h("span", { class: "muted small" }, ` +${m.skipped} skipped`) : null),
    h("td", { class: "num" }, String(m.errors)),
    h("td", { class: `num ${m.error_rate > 0.2 ? "bad" : m.error_rate > 0 ? "warn" : ""}` }, pct(m.error_rate)),
    h("td", { class: "num" }, ms(m.p50_ms)),
    h("td", { class: "num" }, ms(m.p95_ms))));
  fill(tbody, rows, 9, "no models");
  document.getElementById("models-window").textContent = `calls over the last ${data.window} requests`;
  const names = status.models.map((m) => m.name).join("|");
  if (names !== modelsShown) {  // keep the user's choice while the catalog stays the same
    modelsShown = names;
    const select = document.getElementById("try-model");
    const chosen = select.value;
    select.replaceChildren(h("option", { value: "auto" }, "auto (the policy chooses)"),
      ...status.models.map((m) => h("option", { value: m.name }, `${m.name} (${m.tier})`)));
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "auto";
  }
}

function attemptChips(attempts) {
  return h("div", { class: "chips" }, (attempts || []).map((a) => {
    if (a.skipped) return h("span", { class: "chip skip", title: a.error || "" }, `${a.model} skipped`);
    if (a.cached) return h("span", { class: "chip ok" }, `${a.model} cache hit`);
    if (a.ok) return h("span", { class: "chip ok" }, `${a.model} ✓ ${ms(a.latency_ms)}`);
    const why = [a.status_code, a.error_kind].filter((x) => x !== null && x !== undefined).join(" ");
    return h("span", { class: "chip bad", title: a.error || "" }, `${a.model} ✗ ${why || "failed"}`);
  }));
}

function renderDecisions(history) {
  const tbody = document.querySelector("#decisions tbody");
  const rows = history.data.map((e) => h("tr", { "data-request": e.request_id },
    h("td", { title: new Date(e.created_at * 1000).toLocaleString() }, ago(e.created_at)),
    h("td", {}, e.model || h("span", { class: "muted" }, "nobody"), " ", tier(e.tier)),
    h("td", {}, badge(e.status, e.status === "ok" ? "ok" : "bad")),
    h("td", { class: "num" }, ms(e.latency_ms)),
    h("td", { class: "num" }, usd(e.cost_usd)),
    h("td", { class: "why" }, e.decision ? e.decision.reason : e.error || "–"),
    h("td", {}, attemptChips(e.attempts))));
  fill(tbody, rows, 7, "no requests yet: try a prompt");
}

// -- try a prompt -----------------------------------------------------------------------------

function verdictTable(verdicts) {
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Agent", "State", "Votes", "Conf.", "Reason"].map((t) => h("th", {}, t)))),
    h("tbody", {}, verdicts.map((v) => h("tr", {},
      h("td", {}, v.agent), h("td", {}, badge(v.state)), h("td", {}, tier(v.target)),
      h("td", { class: "num" }, v.confidence.toFixed(2)), h("td", {}, v.reason)))));
}

function showDecision(body) {
  const out = document.getElementById("try-result");
  const info = body.orchestra || (body.error && body.error.orchestra) || {};
  if (body.error) {
    out.replaceChildren(
      h("div", { class: "bad", "data-outcome": "error" }, `${body.error.code}: ${body.error.message}`),
      body.error.attempts ? attemptChips(body.error.attempts) : null);
    return;
  }
  out.replaceChildren(
    h("pre", { class: "answer" }, body.choices[0].message.content),
    h("div", { class: "who", "data-outcome": "answered" },
      h("strong", {}, info.model), " ", tier(info.tier),
      h("span", { class: "muted" }, ` · ${ms(info.latency_ms)} · ${usd(info.cost_usd)} · ${body.usage.prompt_tokens}+${body.usage.completion_tokens} tokens · ${info.request_id}`)),
    h("div", { class: "reason" }, h("span", { class: "muted" }, `policy ${info.decision ? info.decision.policy : "?"}: `), info.reason || "–"),
    attemptChips(info.attempts),
    verdictTable(info.verdicts || []));
}

async function tryPrompt(event) {
  event.preventDefault();
  const send = document.getElementById("try-send");
  const prompt = document.getElementById("try-prompt").value.trim();
  if (!prompt) return;
  const body = { model: document.getElementById("try-model").value, messages: [{ role: "user", content: prompt }] };
  const chosenTier = document.getElementById("try-tier").value;
  if (chosenTier) body.orchestra = { tier: chosenTier };
  send.disabled = true;
  document.getElementById("try-result").replaceChildren(h("div", { class: "muted" }, "asking…"));
  try {
    const response = await api("v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    showDecision(await response.json());
    refresh();
  } catch (err) {
    if (err instanceof Unauthorized) askForToken();
    document.getElementById("try-result").replaceChildren(h("div", { class: "bad" }, String(err.message || err)));
  } finally {
    send.disabled = false;
  }
}

// -- the token, and the loop ------------------------------------------------------------------

function askForToken(wrong) {
  stopPolling();
  setLive("down", "needs the token");
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-error").textContent = wrong ? "that token was refused" : "";
  document.getElementById("token-input").focus();
}

function setLive(state, text) {
  const live = document.getElementById("live");
  live.dataset.state = state;
  live.textContent = text;
}

// Each route on its own: one that fails (a store gone degraded) leaves the others drawn.
async function refresh() {
  const results = await Promise.allSettled([
    getJSON("status"),
    getJSON("dashboard/spend?days=31"),
    getJSON("dashboard/models"),
    getJSON(`v1/history?limit=${HISTORY_ROWS}`),
    api("metrics").then((r) => (r.ok ? r.text() : Promise.reject(new Error(`metrics: HTTP ${r.status}`)))),
  ]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  if (failed.some((err) => err instanceof Unauthorized)) {
    askForToken(Boolean(token));
    return;
  }
  const [status, spend, models, history, metrics] = results.map((r) => (r.status === "fulfilled" ? r.value : null));
  if (status) {
    document.getElementById("server").textContent = `v${status.version} · ${status.models.length} models`;
    renderStats(status, metrics ? parseMetrics(metrics) : []);
    renderAgents(status.agents);
    if (models) renderModels(models, status);
  }
  if (spend) renderCharts(spend);
  if (history) renderDecisions(history);
  const at = new Date().toLocaleTimeString();
  if (!failed.length) setLive("live", `live · updated ${at}`);
  else if (failed.length === results.length) setLive("down", `cannot reach the server (${failed[0].message})`);
  else setLive("connecting", `partly updated ${at}: ${failed.map((err) => err.message).join("; ")}`);
}

function startPolling() {
  stopPolling();
  refresh();
  polling = setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
}

function stopPolling() {
  if (polling !== null) clearInterval(polling);
  polling = null;
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);  // this tab only; never sent anywhere but here
  document.getElementById("token-form").hidden = true;
  startPolling();
});
document.getElementById("try-form").addEventListener("submit", tryPrompt);
document.getElementById("try-prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) document.getElementById("try-form").requestSubmit();
});
startPolling();
