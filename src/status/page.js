// herald's status page: renders /status/stream (the page's data, every few
// seconds) and the recent events of /tap. Text from events and config goes
// into the page as text only (textContent), never as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const number = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"));
const rate = (n) => (n >= 100 ? Math.round(n).toString() : (Math.round(n * 10) / 10).toString());

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d > 0 ? `${d} d ${h} h` : h > 0 ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

const SVG = "http://www.w3.org/2000/svg";

// A line over `points` in an SVG of `width` x `height`, optionally filled below.
function draw(svg, points, width, height, area) {
  svg.replaceChildren();
  if (points.length < 2) return;
  const max = Math.max(1, ...points);
  const step = width / (points.length - 1);
  const coords = points.map((p, i) => `${(i * step).toFixed(1)},${(height - (p / max) * (height - 4) - 2).toFixed(1)}`);
  const line = document.createElementNS(SVG, "path");
  line.setAttribute("d", "M" + coords.join(" L"));
  if (area) {
    const fill = document.createElementNS(SVG, "path");
    fill.setAttribute("class", "area");
    fill.setAttribute("d", `M0,${height} L${coords.join(" L")} L${width},${height} Z`);
    svg.appendChild(fill);
  }
  svg.appendChild(line);
}

function sparkline(points) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  draw(svg, points, 100, 20, false);
  return svg;
}

function renderSeries(table, series) {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const names = Object.keys(series).sort((a, b) => sum(series[b]) - sum(series[a]));
  for (const name of names) {
    const points = series[name];
    const row = document.createElement("tr");
    row.dataset.name = name;
    cell(row, name);
    cell(row, rate(points.length ? points[points.length - 1] : 0), "num now");
    cell(row, "").appendChild(sparkline(points));
    body.appendChild(row);
  }
}

const sum = (points) => points.reduce((a, b) => a + b, 0);

function total(series) {
  const lists = Object.values(series);
  if (!lists.length) return [];
  return lists[0].map((_, i) => lists.reduce((a, list) => a + (list[i] || 0), 0));
}

function render(doc) {
  const status = $("#status");
  status.textContent = doc.status;
  status.dataset.status = doc.status;
  $("#version").textContent = doc.version;
  $("#uptime").textContent = duration(doc.uptime_seconds);
  $("#updated").textContent = new Date(doc.generated_at).toLocaleTimeString();

  const events = total(doc.rates.by_type);
  $("#events-rate").textContent = rate(events.length ? events[events.length - 1] : 0);
  $("#events-total").textContent = number(doc.totals.events);
  $("#delivered-total").textContent = number(doc.totals.delivered);
  $("#dropped-total").textContent = number(doc.totals.dropped);
  draw($("#chart"), events, 600, 120, true);
  renderSeries($("#by-type"), doc.rates.by_type);
  renderSeries($("#by-source"), doc.rates.by_source);
  renderSeries($("#by-level"), doc.rates.by_level);

  const sinks = $("#sinks tbody");
  sinks.replaceChildren();
  for (const sink of doc.sinks) {
    const row = document.createElement("tr");
    row.dataset.sink = sink.name;
    cell(row, sink.name);
    cell(row, sink.type);
    const state = cell(row, sink.state, "state");
    state.dataset.state = sink.state;
    cell(row, `${number(sink.queue_depth)} / ${number(sink.queue_capacity)}`
      + (sink.in_flight ? `, ${number(sink.in_flight)} sending` : ""), "num queue");
    const buffer = sink.buffer.type === "disk"
      ? `disk: ${number(sink.buffer.events)} events, ${number(sink.buffer.bytes / 1048576)} MiB` + (sink.buffer.error ? ` (${sink.buffer.error})` : "")
      : "memory";
    cell(row, buffer);
    cell(row, number(sink.delivered), "num delivered");
    cell(row, number(sink.retries), "num");
    cell(row, number(sink.failed), "num failed");
    cell(row, ago(sink.last_success), "last-success");
    cell(row, sink.last_error ? `${ago(sink.last_error_at)}: ${sink.last_error}` : "none", sink.last_error ? "error" : "");
    sinks.appendChild(row);
  }

  const hosts = $("#hosts tbody");
  hosts.replaceChildren();
  for (const host of doc.hosts) {
    const row = document.createElement("tr");
    row.dataset.host = host.host;
    cell(row, host.host, "name");
    cell(row, number(host.events), "num events");
    cell(row, number(host.events_last_15m), "num");
    cell(row, ago(host.last_seen), "last-seen");
    cell(row, number(host.lost), "num lost" + (host.lost > 0 ? " lossy" : ""));
    cell(row, (Math.round(host.loss_ratio * 1000) / 10).toString() + " %", "num loss");
    cell(row, number(host.restarts), "num");
    row.title = host.appenders.map((a) => `${a.tag}: ${a.received} received, ${a.lost} lost, ${a.late} late, row ${a.last_row}`).join("\n");
    hosts.appendChild(row);
  }
  $("#no-hosts").hidden = doc.hosts.length > 0;
  $("#hosts").hidden = doc.hosts.length === 0;

  const drops = $("#drops tbody");
  drops.replaceChildren();
  for (const drop of doc.drops.filter((d) => d.total > 0)) {
    const row = document.createElement("tr");
    row.dataset.drop = `${drop.stage}/${drop.reason}`;
    cell(row, drop.stage);
    cell(row, drop.reason);
    cell(row, number(drop.last_15m), "num");
    cell(row, number(drop.total), "num total");
    drops.appendChild(row);
  }
  $("#no-drops").hidden = drops.children.length > 0;
  $("#drops").hidden = drops.children.length === 0;

  const listeners = $("#listeners");
  listeners.replaceChildren();
  for (const l of doc.listeners) {
    const item = document.createElement("li");
    item.textContent = `${l.listen} (bound ${l.bound}, receive buffer ${number(l.receive_buffer_bytes / 1024)} KiB)`;
    listeners.appendChild(item);
  }
  $("#config").textContent = doc.config;
}

function connectStatus() {
  const live = $("#live");
  const source = new EventSource("/status/stream");
  source.onopen = () => { live.textContent = "live"; live.dataset.live = "live"; };
  source.onmessage = (message) => {
    try { render(JSON.parse(message.data)); } catch (err) { console.error(err); }
  };
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.dataset.live = "reconnecting";
    $("#status").textContent = "unreachable";
    $("#status").dataset.status = "unreachable";
  };
}

// Recent events: the same stream `herald tap` reads, filtered by the form.
const RECENT = 200;
let tap = null;

function summary(event) {
  const t = (key) => event[key] ?? "";
  switch (event.type) {
    case "task": return `task ${t("outcome")} "${t("task_name")}" app "${t("app_name")}": ${t("message")}`;
    case "qix_perf": return `qix-perf ${t("method")} ${t("object_type")} ${t("process_time")} ms app ${t("app_id")} user ${t("user_full")}`;
    case "session": case "connection": return `${event.type} ${t("command")} ${t("user_full")}: ${t("message")}`;
    case "engine_reload_failed": return `reload failed app ${t("app_id")}: ${t("message")}`;
    default: return `${t("subsystem")}: ${t("message")}`;
  }
}

function connectTap() {
  if (tap) tap.close();
  const form = new FormData($("#filter"));
  const query = new URLSearchParams();
  for (const [key, value] of form.entries()) {
    if (value.trim()) query.append(key, value.trim());
  }
  query.append("limit", "20");
  const state = $("#tap-state");
  tap = new EventSource("/tap?" + query.toString());
  tap.onopen = () => { state.textContent = "showing up to 20 events a second"; };
  tap.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    const item = document.createElement("li");
    item.dataset.type = event.type;
    if (event.level) item.dataset.level = event.level;
    if (event.outcome) item.dataset.outcome = event.outcome;
    item.textContent = `${event.time} ${(event.level || "-").padEnd(5)} ${event.host || "-"} ${event.source} ${summary(event)}`;
    const list = $("#recent");
    list.prepend(item);
    while (list.children.length > RECENT) list.lastChild.remove();
  };
  tap.addEventListener("stats", (message) => {
    try {
      const stats = JSON.parse(message.data);
      state.textContent = stats.not_shown > 0
        ? `${number(stats.not_shown)} matching events not shown (over 20 a second)`
        : "showing up to 20 events a second";
    } catch { /* keep the last text */ }
  });
  tap.onerror = () => { state.textContent = "reconnecting…"; };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#filter").addEventListener("submit", (e) => { e.preventDefault(); $("#recent").replaceChildren(); connectTap(); });
  connectStatus();
  connectTap();
});
