// cxstream NOC dashboard: no framework, no CDN. Live updates arrive over server-sent events.
"use strict";
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const money = (m) => (m ? new Intl.NumberFormat(undefined, {style: "currency", currency: m.currency}).format(m.amount) : "");
const pct = (p) => (p == null ? "" : `${Math.round(p * 100)} %`);
const csrf = () => (document.cookie.match(/(?:^|; )cx_csrf=([^;]*)/) || [])[1] || "";
let me = {role: "operator", user: null};  // who is signed in (GET /api/me)
const reasons = (rs) => (rs || []).map((r) => `${r.contribution > 0 ? "+" : "−"} ${r.feature}`).join(", ");
const colour = (x) => {  // experience 0..100 -> red..amber..green
  const v = Math.max(0, Math.min(100, x ?? 100));
  const hue = v < 50 ? (v / 50) * 45 : 45 + ((v - 50) / 50) * 75;
  return `hsl(${hue}, 70%, 50%)`;
};

const openIncidents = new Set();  // incidents whose affected customers are shown: kept across updates
const affectedRows = new Map();  // incident -> {n: affected count when fetched, html}
document.addEventListener("click", (ev) => {  // before the details toggles, and before any redraw
  const details = ev.target.closest("td.affected summary") && ev.target.closest("details");
  if (!details) return;
  const id = details.dataset.incident;
  if (details.open) { openIncidents.delete(id); return; }
  openIncidents.add(id);
  fetchAffected(id, Number(details.dataset.n));
});
const SHOWN_AFFECTED = 200;
const HOW = {  // how a cell incident concerns the customer, as their page says it
  affected: "affected them",
  explained: "explains a degradation of theirs",
  in_cell: "they were in the cell while it lasted",
};
const CAUSES = {  // what opened a cell incident, as the customer page says it
  outage: "the cell went dark: no service there",
  degraded_share: "many of the cell's customers degraded together",
  kpi_anomaly: "the cell's own measures left their normal",
};

async function fetchAffected(id, n) {  // the incident's customers, highest expected loss first
  const cached = affectedRows.get(id);
  if (cached && (cached.n === n || cached.loading)) return;
  affectedRows.set(id, {n, html: cached ? cached.html : "loading…", loading: true});
  const res = await fetch(`/api/incidents/${encodeURIComponent(id)}`).catch(() => null);
  const data = res && res.ok ? await res.json() : null;
  const rows = data ? data.affected.slice(0, SHOWN_AFFECTED) : [];
  const more = data && data.affected.length > rows.length ? `<small>and ${data.affected.length - rows.length} more</small>` : "";
  const html = data ? `<table class="mini">${rows.map((c) => `<tr><td>${String(c.subscriber_id).startsWith("(erased") ? esc(c.subscriber_id) : `<a href="#/customer/${encodeURIComponent(c.subscriber_id)}">${esc(c.subscriber_id)}</a>`}</td><td>${esc(c.value_tier)}</td><td>${pct(c.churn_probability)}</td><td>${esc(money(c.expected_loss))}</td></tr>`).join("")}</table>${more}` : "not available: try again";
  affectedRows.set(id, {n: data ? n : -1, html});
  const box = document.querySelector(`details[data-incident="${CSS.escape(id)}"] .ids`);
  if (box) box.innerHTML = html;
}

function affected(i) {  // "N customers" by tier, unfolding to the customers themselves
  if (!i.affected) return "";
  const open = openIncidents.has(i.id);
  if (open) fetchAffected(i.id, i.affected);  // again when more customers were caught in it
  const cached = affectedRows.get(i.id);
  return `<details data-incident="${esc(i.id)}" data-n="${i.affected}"${open ? " open" : ""}><summary>${i.affected} customer${i.affected === 1 ? "" : "s"} <small>${Object.entries(i.tiers).map(([t, n]) => `${esc(t)} ${n}`).join(", ")}</small></summary><div class="ids">${cached ? cached.html : "loading…"}</div></details>`;
}

const KPI_NAMES = {experience: "experience index", loss_pct: "loss %", throughput: "throughput kbit/s", volume: "traffic", active: "active subscribers"};
const num = (v) => Number(v).toLocaleString(undefined, {maximumFractionDigits: 1});
function kpis(i) {  // what the cell's own measures say, beside whom it hurt
  const moved = Object.entries(i.kpis || {});
  return moved.length ? ` <small class="kpis">${moved.map(([k, v]) => `${esc(KPI_NAMES[k] || k)} ${num(v.value)} (normal ${num(v.baseline)})`).join(", ")}</small>` : "";
}

// a KPI anomaly with nobody degraded alone: of how many the cell's measures speak
const noneDegraded = (i) => (i.active ? `0 of ${i.active} customers degraded` : "0 customers degraded");

function outage(i) {  // the cell went dark, or its traffic fell below half its normal without stopping
  const moved = Object.entries(i.moved_to || {});
  const where = moved.length ? `its subscribers turned up in ${moved.map(([c, n]) => `${esc(c)} (${esc(n)})`).join(", ")}` : "";
  const some = Object.entries(i.kpis || {}).some(([k, v]) => (k === "volume" || k === "active") && v.value > 0);
  if (!some) return `cell silent <small>${where || "no traffic"}</small>`;
  return `traffic collapsed${kpis(i)}${where ? ` <small>${where}</small>` : ""}`;
}

function renderIncidents(incidents) {
  const body = $("#incidents tbody");
  $("#no-incidents").hidden = incidents.length > 0;
  body.innerHTML = incidents.map((i) => `
    <tr data-incident="${esc(i.id)}">
      <td class="sev-${esc(i.severity)}">${esc(i.severity)}</td>
      <td>${esc(i.cell_id)}</td>
      <td class="affected">${affected(i)}${i.cause === "outage" ? outage(i) : `${i.affected ? "" : noneDegraded(i)}${kpis(i)}`}</td>
      <td class="var">${esc(money(i.value_at_risk))}</td>
      <td>${time(i.since)}</td>
      <td class="state">${esc(i.state)}${i.resolved_by ? ` <small class="resolved-by">by ${esc(i.resolved_by)}</small>` : ""}</td>
      <td class="ack">${i.ack ? `${esc(i.ack.by)} ${time(i.ack.at)}` : ""}</td>
      <td>${i.state === "cleared" || me.role !== "operator" ? "" : `${i.ack ? "" : `<button class="ack-btn" data-verb="ack" data-id="${esc(i.id)}">Acknowledge</button>`}<button class="ack-btn resolve-btn" data-verb="resolve" data-id="${esc(i.id)}">Resolve</button>`}</td>
    </tr>`).join("");
}

function renderCells(cells, incidents) {
  // a cell gone dark is down, not idle, nor coloured by the last minute it served
  const dark = new Set(incidents.filter((i) => i.cause === "outage" && i.state !== "cleared").map((i) => i.id));
  $("#cells").innerHTML = cells.map((c) => {
    const down = c.i && dark.has(c.i);
    const look = down ? " down" : c.x == null ? " idle" : "";
    const what = down ? "down: an outage" : c.x == null ? "no subscriber active" : `experience ${c.x}, ${c.d}/${c.a} degraded`;
    return `<div class="cell${c.i ? " incident" : ""}${look}" style="background:${down ? "#000" : c.x == null ? "#4a4f57" : colour(c.x)}" title="${esc(c.id)}: ${what}">${esc(c.id.slice(-3))}</div>`;
  }).join("");
}

function renderCustomers(customers) {
  $("#no-customers").hidden = customers.length > 0;
  $("#customers tbody").innerHTML = customers.map((c) => `
    <tr${c.cleared_at ? ' class="recovered"' : ""}><td><a href="#/customer/${encodeURIComponent(c.subscriber_id)}">${esc(c.subscriber_id)}</a></td>
      <td>${esc(c.value_tier)}</td><td title="${esc(reasons(c.reasons))}">${pct(c.churn_probability)}</td><td>${esc(money(c.expected_loss))}${c.value ? ` <small>of ${esc(money(c.value))}</small>` : ""}</td>
      <td>${c.experience_index == null ? "" : `${esc(c.experience_index)} / 100`}${c.cleared_at ? ` <small title="its degradation cleared">recovered ${esc(time(c.cleared_at))}</small>` : ""}</td><td>${esc(c.cell_id)}</td>
      <td class="wrap">${c.why && c.why.inputs ? c.why.inputs.map((m) => `${esc(m.input)} ${esc(m.from)}→${esc(m.to)}`).join("; ") : ""}</td>
      <td class="wrap">${esc(c.explained_by ? "explained by " + c.explained_by : c.policy || "")}</td></tr>`).join("");
}

function renderActions(actions) {
  $("#no-actions").hidden = actions.length > 0;
  $("#actions tbody").innerHTML = actions.map((a) => `
    <tr><td class="id" title="${esc(a.action_id)}">${esc(a.action_id)}</td><td>${esc(a.subscriber_id)}</td><td>${esc(a.kind)}</td>
      <td class="wrap">${esc(a.status)}${a.error ? ` <small>${esc(a.error)}</small>` : ""}</td><td>${time(a.decided_at)}</td></tr>`).join("");
}

let disabledHooks = [];  // from the last overview: a health event carries the health line alone

function renderHealth(h, disabled) {
  disabledHooks = disabled || disabledHooks;
  const state = h.state && h.state !== "ok" ? `<span class="flow-${esc(h.state)}">flow <b>${esc(h.state)}</b></span>` : "";
  const gone = disabledHooks.length
    ? `<span class="flow-stalled" title="${esc(disabledHooks[0].problem || "")}">webhook <b>disabled</b> <small>(410 Gone since ${time(disabledHooks[0].since)})</small></span>`
    : "";
  const silent = h.kafka_silent_s
    ? `<span class="flow-stalled" title="the broker leading the flow's input has not answered its consumer: the figures stand still">Kafka <b>not answering</b> <small>(${h.kafka_silent_s} s)</small></span>`
    : "";
  const missing = h.unanswered && h.unanswered.length
    ? `<span class="flow-stalled" title="their metrics could not be read: the figures are the other processes' only">process${h.unanswered.length > 1 ? "es" : ""} <b>${h.unanswered.map(esc).join(", ")}</b> not answering</span>`
    : "";
  const over = h.processes > 1 ? `, ${h.processes} processes` : "";
  $("#health").innerHTML = `${state}${silent}${missing}${gone}<span><b>${h.events_per_s == null ? "…" : Math.round(h.events_per_s)}</b> events/s <small>(10 s${over})</small></span><span>lag <b>${h.lag}</b> events</span>
    <span>dead letters <b>${h.dead_letters}</b> events</span><span>webhooks <b>${h.webhook_delivered}</b> ok / <b>${h.webhook_failed}</b> failed</span>`;
}

function render(data) {
  const t0 = performance.now();
  renderIncidents(data.incidents);
  renderCells(data.cells, data.incidents);
  renderCustomers(data.customers);
  renderActions(data.actions);
  renderHealth(data.health, data.webhook_disabled);
  document.body.dataset.version = data.version;
  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);  // for the README's figures
}

async function showCustomer(id) {
  const view = $("#customer");
  const res = await fetch(`/api/customers/${encodeURIComponent(id)}`);
  if (!res.ok) {
    const why = res.status === 403 ? `Your role (${esc(me.role)}) may not open customer pages.` : "Not known.";
    view.innerHTML = `<section><h2>${esc(id)}</h2><p class="empty">${why}</p></section>`;
    return;
  }
  const c = await res.json();
  const p = c.profile || {};
  const changed = (c.consent && c.consent.changed_at) || {};
  const consent = Object.entries(p.consent || {}).map(([k, v]) => `${esc(k)}: ${esc(v)}${changed[k] ? ` <small>(${esc(new Date(changed[k]).toLocaleString())})</small>` : ""}`).join(", ") || "none given (no contact)";
  const churn = c.churn;
  const churnHtml = churn
    ? `<div class="kv"><span>probability</span><b>${pct(churn.probability)}</b><span>value</span><span>${esc(money(churn.value))} <small>(expected loss ${esc(money(churn.expected_loss))})</small></span>
       <span>scored</span><span>${esc(churn.scored_at ? new Date(churn.scored_at).toLocaleString() : "")}</span>
       <span>trend</span><span class="trend">${(churn.trend || []).map(([, p]) => pct(p)).join(" → ")}</span></div>
       <ul class="reasons">${(churn.explanation || []).map((r) => `<li>${r.contribution > 0 ? "raises" : "lowers"} risk: ${esc(r.feature)} <small>(${Number(r.contribution).toFixed(2)})</small></li>`).join("")}</ul>`
    : (c.outcomes || []).some((o) => o.outcome === "churned")
      ? '<p class="empty">No score: the customer has left.</p>'
      : '<p class="empty">Not scored yet.</p>';
  view.innerHTML = `
    <section><h2>Customer ${esc(id)}</h2><div class="kv">
      <span>value tier</span><b>${esc(p.value_tier)}</b><span>plan</span><span>${esc(p.plan)} (${esc(p.plan_mbps)} Mbps), ${esc(p.monthly_charge)}/month</span>
      <span>tenure</span><span>${esc(p.tenure_months)} months, ${esc(p.contract)}</span><span>household</span><span>${esc(p.account_id)} (${esc(p.household_size)})</span>
      <span>consent</span><span>${consent}</span><span>contact</span><span>${esc(p.preferred_channel)}, ${esc(p.language)}, ${esc(p.timezone)}</span>
      <span>open tickets</span><span>${esc(p.open_tickets)}</span>
      <span>experience index</span><b>${esc(c.summary ? c.summary.experience_index : (c.history.length ? c.history[c.history.length - 1][1] : ""))}</b>
    </div></section>
    <section class="churn"><h2>Churn risk</h2>${churnHtml}</section>
    <section><h2>Experience <small>index over the last ${spanText(c.history)}</small></h2>${spark(c.history)}${c.alerts.map((a) => `<div>${time(a.event_time)}: experience ${esc(a.why.experience.from)} → ${esc(a.why.experience.to)} (${(a.why.inputs || []).map((m) => `${esc(m.input)} ${esc(m.from)}→${esc(m.to)}`).join("; ")})${a.explained_by ? ` — cell incident ${esc(a.explained_by)}` : ""}</div>`).join("") || '<p class="empty">No degradation seen.</p>'}</section>
    <section><h2>Incidents</h2>${c.incidents.map((i) => `<div>${esc(i.id)} in ${esc(i.cell_id)}: ${esc(i.state)} since ${time(i.since)}${CAUSES[i.cause] ? ` <small>(${CAUSES[i.cause]})</small>` : ""}${HOW[i.how] ? ` — ${HOW[i.how]}` : ""}</div>`).join("") || '<p class="empty">None.</p>'}</section>
    <section><h2>Contacts: sent, deferred, suppressed</h2>${c.decisions.length ? `<table><thead><tr><th>when</th><th>signal</th><th>kind</th><th>result</th><th>rule</th></tr></thead><tbody>
      ${c.decisions.map((d) => `<tr><td>${time(d.decided_at)}</td><td>${esc(d.signal)}</td><td>${esc(d.kind)}</td><td class="words">${esc(d.result).replace(":", ":<wbr>")}${d.send_at ? " until " + time(d.send_at) : ""}</td><td class="wrap">${esc(d.rule)}</td></tr>`).join("")}</tbody></table>` : '<p class="empty">No contact decided.</p>'}</section>
    <section><h2>Offers and outcomes</h2>${c.offers.map((o) => `<div>${time(o.decided_at)}: ${esc(o.kind)} ${esc(o.result)}${o.accepted ? " — accepted" : ""}</div>`).join("") || '<p class="empty">No offer made.</p>'}
      ${c.outcomes.map((o) => `<div>${o.time ? `${esc(new Date(o.time).toLocaleString())}: ` : ""}outcome: ${esc(o.outcome)}</div>`).join("")}</section>`;
}

function spanText(h) {
  if (!h || h.length < 2) return "hours and days";
  const hours = (h[h.length - 1][0] - h[0][0]) / 3600;
  if (hours < 1) { const m = Math.max(1, Math.round(hours * 60)); return m === 1 ? "minute" : `${m} minutes`; }
  return hours >= 48 ? `${(hours / 24).toFixed(1)} days` : `${hours.toFixed(1)} hours`;
}

function spark(h) {  // an inline SVG line of the experience index, 0..100
  if (!h || h.length < 2) return '<p class="empty">No history recorded yet.</p>';
  const t0 = h[0][0], span = Math.max(1, h[h.length - 1][0] - t0);
  const pts = h.map(([t, v]) => `${((t - t0) / span * 600).toFixed(1)},${(60 - v * 0.6).toFixed(1)}`).join(" ");
  return `<svg class="spark" viewBox="0 0 600 60" preserveAspectRatio="none"><polyline fill="none" stroke="#7fc1ff" stroke-width="1.5" points="${pts}"/></svg>`;
}

function route() {
  const m = location.hash.match(/^#\/customer\/(.+)$/);
  $("#overview").hidden = !!m;
  $("#customer").hidden = !m;
  if (m) showCustomer(decodeURIComponent(m[1]));
}

document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest(".ack-btn");
  if (!btn) return;
  btn.disabled = true;
  const user = me.user || localStorage.getItem("cx-user") || "noc-operator";
  const res = await fetch(`/api/incidents/${encodeURIComponent(btn.dataset.id)}/${btn.dataset.verb}`, {
    method: "POST", headers: {"content-type": "application/json", "x-csrf-token": csrf()}, body: JSON.stringify({user}),
  }).catch(() => null);
  if (!res || !res.ok) {  // not recorded: say so, and let the operator try again
    const body = res ? await res.json().catch(() => ({})) : {};
    notice(`${btn.dataset.verb === "ack" ? "Acknowledge" : "Resolve"} ${btn.dataset.id}: ${body.error || (res ? res.statusText : "no answer from the dashboard")}`);
    btn.disabled = false;
  }
});

let noticeTimer = null;
function notice(text) {
  const el = $("#notice");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 20000);
}

$("#search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (!q) return;
  const res = await (await fetch(`/api/customers?q=${encodeURIComponent(q)}`)).json();
  location.hash = `#/customer/${encodeURIComponent(res.results[0] || q)}`;
});

window.addEventListener("hashchange", route);
fetch("/api/me").then((r) => (r.ok ? r.json() : me)).then((who) => { me = who; })
  .then(() => fetch("/api/overview"))
  .then((r) => { if (r.status === 401) location.href = "/login"; return r.json(); }).then(render);
const events = new EventSource("/api/events");
events.addEventListener("overview", (ev) => render(JSON.parse(ev.data)));
events.addEventListener("health", (ev) => renderHealth(JSON.parse(ev.data).health));
route();
