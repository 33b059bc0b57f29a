// Building the page from data without ever parsing data as HTML: every text goes
// in through textContent (text nodes), so a value such as "<img onerror=...>"
// shows as those characters and never becomes markup.

const SVG = "http://www.w3.org/2000/svg";

// h("p", {className: "x"}, "text", child): an element with properties and children.
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  return fill(node, props, children);
}

// The same for SVG elements: attributes (not properties), which is what SVG reads.
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return fill(node, {}, children);
}

function fill(node, props, children) {
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else node[name] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

export function replace(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function text(id, value) {
  $(id).textContent = value === null || value === undefined ? "" : String(value);
}

// -- formats ------------------------------------------------------------------

export function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? `${Math.round(value)} ms` : `${Number(value).toFixed(1)} ms`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Number(value);
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = Number(value);
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${n.toFixed(n < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

// "2026-01-15T10:30:00Z" -> "10:30:00" (local time), the date too when not today.
export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

export function statusLabel(status) {
  return { healthy: "Healthy", degraded: "Degraded", unhealthy: "Unhealthy" }[status] || "Unknown";
}
