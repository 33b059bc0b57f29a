// The status page: sign in, then refresh every 5 s while the tab is visible.

import { $, text, replace, when } from "./dom.js";
import { ApiError, call, forget, login, logout, session, useToken } from "./api.js";
import * as chart from "./chart.js";
import { banner, cards, forgetTransitions, summaries, transitions } from "./cards.js";
import { refreshSessions, resetSessions } from "./ops.js";
import { setUpAdmin } from "./admin.js";

const REFRESH_MS = 5000;
let timer = null;
let running = false;
let info = null;

function showLogin(message) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  text("login-error", message || "");
  $("username").focus();
}

function showBoard() {
  const current = session();
  $("login").hidden = true;
  $("board").hidden = false;
  $("session").hidden = false;
  text("who", `${current.user} (${current.role})`);
  $("admin-panel").hidden = current.role !== "admin";
  refreshNow();
}

async function refresh() {
  const status = await call("/api/database/status");
  if (status.status === 401) {
    forget();
    showLogin(`Signed out: ${status.error}`);
    return;
  }
  if (!status.success || !status.data || !status.data.health) {
    banner("unhealthy", status.error || "The status could not be read");
    return;
  }
  if (info === null) {
    const answer = await call("/api/database/info");
    if (answer.success) info = answer.data;
  }
  const data = status.data;
  banner(data.health.status, data.health.message);
  cards(data, info);
  replace($("chart"), chart.draw(chart.remember(data.monitor && data.monitor.recent_probes)));
  transitions(data.monitor && data.monitor.transitions, data.monitor && data.monitor.transitions_error);
  summaries(data);
  text("updated", `Updated ${when(new Date().toISOString())}; refreshes every ${REFRESH_MS / 1000} s while this tab is visible.`);
  await refreshSessions();
}

// One refresh at a time; the next is scheduled only after this one ends, and
// only while the tab is visible and someone is signed in.
async function refreshNow() {
  clearTimeout(timer);
  if (running || !session()) return;
  running = true;
  try {
    await refresh();
  } catch (error) {
    const reason = error instanceof ApiError ? error.message : "The page could not be updated";
    banner("unhealthy", `${reason}; retrying`);
  } finally {
    running = false;
    if (session() && document.visibilityState === "visible") timer = setTimeout(refreshNow, REFRESH_MS);
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshNow();
  else clearTimeout(timer);
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await login($("username").value, $("password").value);
    $("password").value = "";
    showBoard();
  } catch (error) {
    text("login-error", error.status === 401 ? "Wrong username or password." : error.message);
  }
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await useToken($("token").value.trim());
    $("token").value = "";
    showBoard();
  } catch (error) {
    text("login-error", error.message);
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await logout();
  } finally {
    info = null;
    chart.clear();
    forgetTransitions();
    resetSessions();
    replace($("cards"));
    replace($("console-result"));
    showLogin("Signed out.");
  }
});

setUpAdmin(refreshNow);
if (session()) showBoard();
else showLogin();
