// The playground: the relay's test client in a page, on top of /client.js.
import { hexDump, RelayError, RelayWebClient } from "./client.js";

const $ = (id) => document.getElementById(id);
/** @type {RelayWebClient | undefined} */
let client;
let whoTimer = 0;

function size(n) {
  return n < 1024
    ? `${n} B`
    : n < 1048576
    ? `${(n / 1024).toFixed(1)} KiB`
    : `${(n / 1048576).toFixed(1)} MiB`;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function state(text, kind = "") {
  $("state").textContent = text;
  $("state").className = `status ${kind}`;
}

/** Adds an entry to the log: kind is in, out, error or info. */
function entry(kind, parts, body) {
  const div = document.createElement("div");
  div.className = `msg ${kind}`;
  div.dataset.kind = kind;
  const meta = document.createElement("div");
  meta.className = "meta";
  for (const [label, value] of parts) {
    const span = document.createElement("span");
    if (label) {
      span.append(`${label} `);
      const b = document.createElement("b");
      b.textContent = value;
      span.append(b);
    } else span.textContent = value;
    meta.append(span);
  }
  div.append(meta);
  if (body !== undefined) {
    const pre = document.createElement("pre");
    pre.textContent = body;
    div.append(pre);
  }
  $("log").prepend(div);
  while ($("log").children.length > 500) $("log").lastChild.remove();
}

function show(message, direction) {
  const isText = message.isText();
  entry(direction, [
    [direction === "in" ? "from" : "to", direction === "in" ? message.from : message.to],
    ["", time(message.receivedAt)],
    ["", size(message.payload.length)],
    ["", isText ? "text" : "binary"],
  ], isText ? message.text() : hexDump(message.payload));
}

function connected(on) {
  $("send-button").disabled = !on;
  $("who-button").disabled = !on;
  $("connect-button").classList.toggle("hidden", on);
  $("disconnect-button").classList.toggle("hidden", !on);
  $("name").disabled = on;
  $("token").disabled = on;
}

async function refreshWho() {
  if (!client?.connected) return;
  const list = $("who");
  try {
    const { names, more } = await client.who({ limit: 200 });
    list.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name === client.name ? `${name} (you)` : name;
      button.addEventListener("click", () => {
        $("to").value = name;
        $("text").focus();
      });
      li.append(button);
      return li;
    }));
    $("who-note").textContent = `${names.length}${
      more ? "+" : ""
    } online. Click a name to write to it.`;
  } catch (error) {
    list.replaceChildren();
    $("who-note").textContent = error instanceof RelayError && error.reason === "listing_disabled"
      ? "This relay does not list names (--listing off)."
      : `Cannot list names: ${error.message}`;
  }
}

$("connect").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const token = $("token").value || undefined;
  state("connecting…");
  $("connect-button").disabled = true;
  try {
    client = await RelayWebClient.connect({ name, token, queue: false });
  } catch (error) {
    state(`refused: ${error.reason ?? "error"}`, "bad");
    entry("error", [["refused", error.reason ?? "error"]], error.message);
    $("connect-button").disabled = false;
    return;
  }
  $("connect-button").disabled = false;
  localStorage.setItem("relay-playground-name", name);
  state(`connected as ${name}`, "good");
  $("hint").textContent = `relay connect ${location.hostname}:PORT bob`;
  $("hint-line").textContent = `${/\s/.test(name) ? JSON.stringify(name) : name} hello`;
  entry("info", [["registered as", name], ["", `relay ${client.welcome?.relay ?? ""}`]]);
  connected(true);
  client.addEventListener("message", (e) => show(e.detail, "in"));
  client.addEventListener("relay-error", (e) => {
    const d = e.detail;
    const parts = [["error", d.reason]];
    if (d.dest) parts.push(["to", d.dest]);
    if (d.count > 1) parts.push(["messages", String(d.count)]);
    if (d.limit) parts.push(["limit", size(d.limit)]);
    entry(
      "error",
      parts,
      d.reason === "unknown_destination" ? `Nobody is online as "${d.dest}"` : d.message,
    );
  });
  client.addEventListener("online", (e) => {
    entry("info", [["online", e.detail]]);
    void refreshWho();
  });
  client.addEventListener("offline", (e) => {
    entry("info", [["offline", e.detail]]);
    void refreshWho();
  });
  client.addEventListener("reconnecting", (e) => {
    state(`reconnecting (${e.detail.reason})…`, "bad");
    connected(false);
  });
  client.addEventListener("open", () => {
    state(`connected as ${name}`, "good");
    connected(true);
  });
  client.addEventListener("close", (e) => {
    state(`disconnected: ${e.detail.reason}`, e.detail.reason === "closed" ? "" : "bad");
    entry("error", [["disconnected", e.detail.reason]], e.detail.message);
    connected(false);
    clearInterval(whoTimer);
  });
  await refreshWho();
  clearInterval(whoTimer);
  whoTimer = setInterval(refreshWho, 5000);
});

$("disconnect-button").addEventListener("click", () => client?.close());

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!client) return;
  const to = $("to").value.trim();
  const file = $("file").files?.[0];
  const data = file
    ? new Uint8Array(await file.arrayBuffer())
    : new TextEncoder().encode($("text").value);
  try {
    await client.send(to, data);
    const sent = { to, payload: data, receivedAt: Date.now() };
    sent.isText = () => !file;
    sent.text = () => new TextDecoder().decode(data);
    show(sent, "out");
    if (file) $("file").value = "";
    else $("text").value = "";
  } catch (error) {
    entry("error", [["not sent", error.reason ?? error.name]], error.message);
  }
});

$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("send").requestSubmit();
});

$("who-button").addEventListener("click", refreshWho);
$("clear-button").addEventListener("click", () => $("log").replaceChildren());
$("name").value = localStorage.getItem("relay-playground-name") ?? "";
