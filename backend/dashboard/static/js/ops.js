// Sessions by state and the blocking chains (GET /api/database/sessions and /locks).
// A service without those routes answers 404: the panel then stays hidden and
// the page stops asking.

import { $, h, replace, text, seconds } from "./dom.js";
import { call } from "./api.js";

let available = true;

export async function refreshSessions() {
  if (!available) return;
  const [sessions, locks] = await Promise.all([call("/api/database/sessions"), call("/api/database/locks")]);
  if (sessions.status === 404 || locks.status === 404) {
    available = false;
    $("sessions-panel").hidden = true;
    return;
  }
  $("sessions-panel").hidden = false;
  if (!sessions.success) {
    text("sessions-summary", sessions.error || "Sessions unavailable");
    replace($("sessions-by-state"));
    replace($("locks"));
    return;
  }
  const data = sessions.data;
  if (data.supported === false) {
    text("sessions-summary", `Not available here: ${data.reason || "not supported by this database"}`);
    replace($("sessions-by-state"));
    replace($("locks"));
    return;
  }
  text(
    "sessions-summary",
    `${data.total} sessions` +
      (data.max_connections ? ` of ${data.max_connections} allowed` : "") +
      (data.oldest_transaction_s !== null && data.oldest_transaction_s !== undefined
        ? `; oldest open transaction ${seconds(data.oldest_transaction_s)}`
        : ""),
  );
  const states = Object.entries(data.by_state || {});
  const most = Math.max(1, ...states.map(([, n]) => n));
  replace(
    $("sessions-by-state"),
    states.map(([state, n]) =>
      h("li", { dataset: { state } }, h("span", { className: "state" }, state.replace(/_/g, " ")), h("meter", { min: 0, max: most, value: n }), h("span", {}, String(n))),
    ),
  );
  renderLocks(locks);
}

function renderLocks(locks) {
  if (!locks.success) {
    replace($("locks"), h("p", { className: "error" }, locks.error || "Locks unavailable"));
    return;
  }
  const data = locks.data;
  if (data.supported === false || !(data.chains || []).length) {
    replace($("locks"), h("p", { className: "muted" }, data.supported === false ? data.reason || "Not supported" : "No session waits for a lock."));
    return;
  }
  replace(
    $("locks"),
    h("p", {}, `${data.waiting_total} waiting, longest ${seconds(data.longest_wait_s)}`),
    h("ul", { className: "chains" }, data.chains.map(chainItem)),
  );
}

function chainItem(node) {
  const facts = [`pid ${node.pid}`];
  if (node.state) facts.push(node.state.replace(/_/g, " "));
  if (node.transaction_age_s !== undefined && node.transaction_age_s !== null) facts.push(`transaction ${seconds(node.transaction_age_s)}`);
  if (node.waiting_s !== undefined) facts.push(`waiting ${seconds(node.waiting_s)}`);
  if (node.lock_type || node.mode) facts.push([node.lock_type, node.mode, node.relation].filter(Boolean).join(" "));
  return h(
    "li",
    {},
    h("span", {}, facts.join(", ")),
    node.query ? h("code", {}, node.query) : null,
    (node.blocks || []).length ? h("ul", {}, node.blocks.map(chainItem)) : null,
  );
}

export function resetSessions() {
  available = true;
  $("sessions-panel").hidden = true;
}
