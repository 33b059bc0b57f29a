// The latency chart: recent probes as an SVG line with one dot per probe, the dot
// coloured by the status that probe found. Drawn here, no charting library.

import { s, when, ms } from "./dom.js";

const W = 600;
const H = 180;
const PAD = { left: 52, right: 12, top: 12, bottom: 26 };
const KEEP = 60;

// Each gunicorn worker keeps its own history and any one of them answers a
// refresh: merge what every answer brought, newest KEEP probes, in time order.
const seen = new Map();

export function remember(probes) {
  for (const probe of probes || []) {
    const key = `${probe.at}|${probe.status}|${probe.response_time_ms}`;
    seen.set(key, probe);
  }
  const ordered = [...seen.entries()].sort((a, b) => Date.parse(a[1].at) - Date.parse(b[1].at));
  for (const [key] of ordered.slice(0, Math.max(0, ordered.length - KEEP))) seen.delete(key);
  return ordered.slice(-KEEP).map(([, probe]) => probe);
}

export function clear() {
  seen.clear();
}

export function draw(probes) {
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": `Response time of the last ${probes.length} probes`,
    preserveAspectRatio: "xMidYMid meet",
  });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  if (!probes.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis-label" }, "No probes yet"));
    return svg;
  }
  const times = probes.map((p) => Date.parse(p.at));
  const first = Math.min(...times);
  const span = Math.max(Math.max(...times) - first, 1);
  const top = niceMax(Math.max(...probes.map((p) => p.response_time_ms || 0)));
  const x = (i) => PAD.left + (probes.length === 1 ? plotW / 2 : ((times[i] - first) / span) * plotW);
  const y = (v) => PAD.top + plotH - (Math.min(v || 0, top) / top) * plotH;

  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value), class: "grid" }),
      s("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis-label" }, `${+value.toPrecision(3)} ms`),
    );
  }
  svg.append(
    s("text", { x: PAD.left, y: H - 6, class: "axis-label" }, when(probes[0].at)),
    s("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end", class: "axis-label" }, when(probes.at(-1).at)),
  );
  const points = probes.map((p, i) => `${x(i).toFixed(1)},${y(p.response_time_ms).toFixed(1)}`).join(" ");
  svg.append(s("polyline", { points, class: "line" }));
  probes.forEach((probe, i) => {
    svg.append(
      s(
        "circle",
        { cx: x(i).toFixed(1), cy: y(probe.response_time_ms).toFixed(1), r: 3.5, class: `dot ${probe.status}` },
        s("title", {}, `${when(probe.at)}: ${probe.status}, ${ms(probe.response_time_ms)}`),
      ),
    );
  });
  return svg;
}

// A round upper bound for the axis: 1, 2 or 5 times a power of ten.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}
