// Admins only: the query console (POST /api/database/test) and reconnect
// (POST /api/database/reconnect, after a confirmation). The server checks the
// role on every call; hiding the panel from viewers is only a courtesy.

import { $, h, replace, text, ms } from "./dom.js";
import { call } from "./api.js";

export function setUpAdmin(onChange) {
  $("console-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("console-run");
    button.disabled = true;
    replace($("console-result"), h("p", { className: "muted" }, "Running…"));
    try {
      const maxRows = Number.parseInt($("console-max-rows").value, 10);
      const body = { query: $("console-query").value };
      if (Number.isFinite(maxRows)) body.max_rows = maxRows;
      showResult(await call("/api/database/test", { method: "POST", body }));
    } catch (error) {
      showResult({ success: false, error: error.message });
    } finally {
      button.disabled = false;
    }
  });

  const dialog = $("reconnect-dialog");
  $("reconnect").addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    text("reconnect-result", "Reconnecting…");
    try {
      const answer = await call("/api/database/reconnect", { method: "POST" });
      const data = answer.data || {};
      text(
        "reconnect-result",
        answer.success
          ? `Done: generation ${data.generation}, ${data.disposed_connections} connections closed here, database ${data.health.status}.`
          : `Reconnect failed: ${answer.error}`,
      );
    } catch (error) {
      text("reconnect-result", `Reconnect failed: ${error.message}`);
    }
    onChange();
  });
}

function showResult(answer) {
  const out = $("console-result");
  if (!answer.success) {
    replace(out, h("p", { className: "error" }, answer.code ? `${answer.code}: ${answer.error}` : answer.error));
    return;
  }
  const data = answer.data;
  replace(
    out,
    h(
      "p",
      { className: "muted" },
      `${data.row_count} row${data.row_count === 1 ? "" : "s"} in ${ms(data.elapsed_ms)}${data.truncated ? " (truncated)" : ""}`,
    ),
    h(
      "div",
      { className: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, data.columns.map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          data.rows.map((row) => h("tr", {}, row.map((v) => h("td", { className: v === null ? "null" : "" }, cell(v))))),
        ),
      ),
    ),
  );
}

function cell(value) {
  if (value === null) return "NULL";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
