// The banner, one card per component, the transitions and the monitor's numbers,
// all from one GET /api/database/status (plus /info for where each server is).

import { $, h, replace, text, ms, seconds, bytes, when, statusLabel } from "./dom.js";

export function banner(status, message) {
  const node = $("banner");
  node.dataset.status = status || "unknown";
  text("banner-status", statusLabel(status));
  text("banner-message", message || "");
}

export function cards(status, info) {
  const components = status.health.components || {};
  const where = { primary: info, ...((info && info.binds) || {}) };
  replace(
    $("cards"),
    Object.entries(components).map(([name, component]) =>
      card(name, component, (status.server || {})[name] || {}, (status.pool || {})[name], where[name]),
    ),
  );
}

function card(name, component, server, pool, place) {
  const lag = component.replica
    ? seconds(component.replication_lag_s)
    : component.status === "unhealthy"
      ? "–"
      : "not a replica";
  const rows = [
    ["Version", component.version || "–"],
    ["Server", serverText(place, component)],
    ["Response time", ms(component.response_time_ms)],
    ["Pool", gauge(poolNumbers(pool || component.pool_status))],
    ["Connections", gauge(connectionNumbers(component.connections || server.connections))],
    ["Replica lag", lag],
  ];
  if (server.uptime_seconds !== undefined) rows.push(["Server uptime", seconds(server.uptime_seconds)]);
  if (server.database_size_bytes !== undefined) rows.push(["Database size", bytes(server.database_size_bytes)]);
  const warnings = component.warnings || [];
  return h(
    "article",
    { className: "card", dataset: { component: name, status: component.status } },
    h(
      "header",
      {},
      h("h3", {}, name),
      h("span", { className: "pill", dataset: { status: component.status } }, statusLabel(component.status)),
    ),
    h("dl", {}, rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)])),
    warnings.length ? h("ul", { className: "warnings" }, warnings.map((w) => h("li", {}, w))) : null,
    component.status !== "healthy" && !warnings.length ? h("p", { className: "message" }, component.message) : null,
    component.error ? h("p", { className: "error detail" }, component.error) : null,
  );
}

function serverText(place, component) {
  const type = component.database_type || (place && place.database_type) || "";
  if (!place || !place.host) return place && place.database ? `${type} ${place.database}` : type || "–";
  return `${type} ${place.host}:${place.port || ""}/${place.database || ""}`;
}

function poolNumbers(pool) {
  if (!pool || pool.pool_size === null || pool.pool_size === undefined) {
    return { text: pool && pool.pool_class ? `${pool.pool_class} (no fixed pool)` : "–" };
  }
  const capacity = pool.pool_size + Math.max(pool.max_overflow || 0, 0);
  return {
    value: pool.checked_out,
    max: capacity,
    text: `${pool.checked_out} of ${capacity} in use (${pool.checked_in} idle)`,
  };
}

function connectionNumbers(connections) {
  if (!connections || connections.used === null || connections.used === undefined) return { text: "–" };
  if (!connections.max) return { text: `${connections.used} in use` };
  return { value: connections.used, max: connections.max, text: `${connections.used} of ${connections.max} (${connections.percent}%)` };
}

// A native <meter>: its colour turns as the value passes "high"; no inline style.
function gauge({ value, max, text: label }) {
  if (value === undefined || !max) return label;
  const meter = h("meter", { min: 0, max, low: max * 0.6, high: max * 0.8, optimum: 0, value });
  meter.setAttribute("aria-label", label);
  return h("span", { className: "gauge" }, meter, h("span", {}, label));
}

// Transitions, newest first: the fleet's (every instance and component) where
// /status gives them so, and merged over refreshes in any case.
const transitionsSeen = new Map();

export function transitions(list, error) {
  for (const t of list || []) transitionsSeen.set(`${t.at}|${t.instance}|${t.component}|${t.from}|${t.to}`, t);
  const newest = [...transitionsSeen.values()].sort((a, b) => Date.parse(b.at) - Date.parse(a.at)).slice(0, 20);
  replace(
    $("transitions"),
    newest.length
      ? newest.map((t) =>
          h(
            "li",
            { title: t.message || "" },
            h("time", { dateTime: t.at }, when(t.at)),
            " ",
            t.component ? h("span", { className: "component" }, t.component) : null,
            " ",
            h("span", { className: "pill", dataset: { status: t.from || "unknown" } }, t.from ? statusLabel(t.from) : "start"),
            " → ",
            h("span", { className: "pill", dataset: { status: t.to } }, statusLabel(t.to)),
            t.instance ? h("span", { className: "muted" }, ` on ${t.instance}`) : null,
          ),
        )
      : h("li", { className: "muted" }, "No changes seen yet"),
    error ? h("li", { className: "muted" }, `Stored history unavailable: ${error}`) : null,
  );
}

export function forgetTransitions() {
  transitionsSeen.clear();
}

export function summaries(status) {
  const monitor = status.monitor || {};
  const latency = monitor.latency_ms || {};
  text(
    "latency-summary",
    `Primary, last ${latency.samples || 0} probes in this worker: p50 ${ms(latency.p50)}, p95 ${ms(latency.p95)}, max ${ms(latency.max)}.`,
  );
  const migrations = status.migrations || {};
  const migrationText =
    migrations.up_to_date === true ? "migrations up to date" : migrations.up_to_date === false ? "migrations pending" : "migrations unknown";
  text(
    "monitor-summary",
    `${monitor.checks_total || 0} checks, ${monitor.failures_total || 0} failed` +
      (monitor.last_failure ? `, last failure ${when(monitor.last_failure)}` : "") +
      `; ${migrationText}.`,
  );
  const process = status.process || {};
  const instance = status.instance ? `instance ${status.instance}, ` : "";
  text("process", `Answered by ${instance}process ${process.pid}, up ${seconds(process.uptime_seconds)}.`);
}
