// The status page: renders /api/events (server-sent events, one snapshot a second).
const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat("en");

/** Bytes in binary units. */
export function formatBytes(n) {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Seconds as "3d 4h", "5m 2s". */
export function formatDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${sec}s`;
  return `${sec}s`;
}

function rate(n) {
  return n >= 100 ? number.format(Math.round(n)) : n.toFixed(n === 0 ? 0 : 1);
}

let history = [];
const HISTORY_MAX = 300;
const MIN_SPAN = 60;

function table(id, rows, empty) {
  const el = $(id);
  el.replaceChildren();
  if (rows.length === 0) {
    const tr = el.insertRow();
    const td = tr.insertCell();
    td.className = "muted";
    td.textContent = empty;
    return;
  }
  for (const [key, value] of rows) {
    const tr = el.insertRow();
    const name = tr.insertCell();
    name.className = "mono";
    name.textContent = key;
    const cell = tr.insertCell();
    cell.className = "num";
    cell.textContent = value;
  }
}

function reasons(counts) {
  return Object.entries(counts ?? {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1])
    .map(([k, n]) => [k, number.format(n)]);
}

const SVG = "http://www.w3.org/2000/svg";

function chart(id, values, format) {
  const svg = $(id);
  const width = 300, height = 140, top = 14, bottom = 126;
  const max = Math.max(1, ...values);
  // The x axis spans the history so far (at least a minute), up to five minutes.
  const span = Math.min(HISTORY_MAX, Math.max(MIN_SPAN, values.length));
  const step = width / Math.max(1, span - 1);
  const offset = width - (values.length - 1) * step;
  const points = values.map((v, i) =>
    `${(offset + i * step).toFixed(1)},${(bottom - (v / max) * (bottom - top)).toFixed(1)}`
  );
  svg.replaceChildren();
  const axis = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: width, y1: bottom, y2: bottom })) {
    axis.setAttribute(k, String(v));
  }
  axis.setAttribute("class", "axis");
  svg.append(axis);
  if (points.length > 1) {
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", `${offset},${bottom} ${points.join(" ")} ${width},${bottom}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", points.join(" "));
    svg.append(area, line);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.textContent = `max ${format(max)}`;
  svg.append(label);
  void height;
}

function render(s) {
  $("version").textContent = s.version;
  // Cluster mode: this node and the others with the names each holds.
  const cluster = $("cluster");
  if (cluster) {
    const mesh = s.mesh;
    cluster.textContent = mesh
      ? `node ${mesh.node}` +
        Object.entries(mesh.remoteNames).map(([node, n]) => ` · ${node}: ${number.format(n)} names`)
          .join("")
      : "";
  }
  $("uptime").textContent = formatDuration(s.uptimeSeconds);
  const max = s.maxConnections;
  $("connections").textContent = number.format(s.connections);
  $("connections-sub").textContent = `${number.format(s.accepted)} accepted` +
    (max ? ` · max ${number.format(max)}` : "");
  $("registered").textContent = number.format(s.registered);
  $("websockets").textContent = `${number.format(s.webSockets)} over WebSocket`;
  $("mps").textContent = rate(s.rate.messagesPerSecond);
  $("messages").textContent = `${number.format(s.messages)} delivered`;
  $("bps").textContent = formatBytes(s.rate.bytesPerSecond);
  $("bytes").textContent = `${formatBytes(s.bytes)} delivered`;
  $("queued").textContent = formatBytes(s.queuedBytes);
  const budget = s.memory;
  let used = 0;
  if (budget && typeof budget.budgetBytes === "number" && budget.budgetBytes > 0) {
    used = budget.usedBytes / budget.budgetBytes;
    $("budget").textContent = `${(used * 100).toFixed(1)}% of the ${
      formatBytes(budget.budgetBytes)
    } memory budget`;
  } else {
    const per = s.maxBufferBytes;
    const total = per ? per * Math.max(1, s.connections) : 0;
    used = total ? s.queuedBytes / total : 0;
    $("budget").textContent = per ? `budget ${formatBytes(per)} per receiver` : "";
  }
  $("budget-bar").style.width = `${Math.min(100, used * 100).toFixed(1)}%`;
  $("rss").textContent = formatBytes(s.process.rss);
  $("heap").textContent = `heap ${formatBytes(s.process.heapUsed)}`;
  table("disconnects", reasons(s.disconnects), "None yet");
  table(
    "refused",
    [
      ...reasons(s.refused).map(([k, n]) => [`refused: ${k}`, n]),
      ...reasons(s.dropped).map(([k, n]) => [`dropped: ${k}`, n]),
    ],
    "None yet",
  );
  const names = $("names");
  $("names-off").classList.toggle("hidden", s.listing !== false);
  names.replaceChildren(
    ...(s.names ?? []).map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }),
  );
  if (s.listing !== false && (s.names ?? []).length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "nobody";
    names.append(li);
  }
  table(
    "settings",
    Object.entries(s.settings ?? {}).map(([k, v]) => [k, String(v)]),
    "Not given",
  );
  const span = Math.min(HISTORY_MAX, Math.max(MIN_SPAN, history.length));
  for (const el of document.querySelectorAll(".span")) {
    el.textContent = `(last ${span >= 120 ? `${Math.round(span / 60)} min` : `${span} s`})`;
  }
  chart("chart-messages", history.map((h) => h.messagesPerSecond), rate);
  chart("chart-bytes", history.map((h) => h.bytesPerSecond), (n) => `${formatBytes(n)}/s`);
}

function live(state, text) {
  $("live").className = `dot ${state}`;
  $("live-text").textContent = text;
}

function start() {
  const events = new EventSource("/api/events");
  events.onopen = () => live("live", "live");
  events.onerror = () => live("down", "reconnecting…");
  events.onmessage = (event) => {
    const s = JSON.parse(event.data);
    if (s.history) history = s.history;
    else if (s.rate && history.at(-1)?.t !== s.rate.t) history.push(s.rate);
    while (history.length > HISTORY_MAX) history.shift();
    live("live", "live");
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
    render(s);
  };
}

start();
