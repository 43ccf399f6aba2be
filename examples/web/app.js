// The live sensor page: STOMP over WebSocket (@stomp/stompjs) to Tern.
// Readings: /topic/sensors/<device>/<reading>, a JSON {"value": 21.5, "unit": "C"}
// or a bare number (anything else is shown as text). Commands: /topic/commands/<device>.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss" : "ws";
const brokerURL = params.get("broker") || `${scheme}://${location.host}/stomp`;
$("broker").textContent = brokerURL;

const chart = new LiveChart($("chart"), $("legend"));
window.ternChart = chart; // for the browser test

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function parseReading(body) {
  try {
    const json = JSON.parse(body);
    if (typeof json === "number") return { value: json, unit: "" };
    if (json && typeof json === "object" && "value" in json) {
      return { value: json.value, unit: json.unit ?? "" };
    }
    if (json && typeof json === "object") {
      return { value: Object.entries(json).map(([k, v]) => `${k}=${v}`).join(" "), unit: "" };
    }
  } catch (_) { /* not JSON: shown as text */ }
  return { value: body, unit: "" };
}

function showReading(topic, body) {
  const [, device = "?", ...rest] = topic.split("/");
  const name = rest.join("/") || "(value)";
  const { value, unit } = parseReading(body);
  const tbody = $("readings").tBodies[0];
  tbody.querySelector("tr.empty")?.remove();
  let row = [...tbody.rows].find((r) => r.dataset.topic === topic);
  if (!row) {
    row = tbody.insertRow();
    row.dataset.topic = topic;
    for (let i = 0; i < 5; i++) row.insertCell();
    row.cells[0].textContent = device;
    row.cells[1].textContent = name;
    row.cells[2].className = "value";
    [...tbody.rows].sort((a, b) => a.dataset.topic.localeCompare(b.dataset.topic))
      .forEach((r) => tbody.appendChild(r));
  }
  const numeric = typeof value === "number" ? value : Number(value);
  row.cells[2].textContent = typeof value === "number" ? String(Math.round(value * 100) / 100) : String(value);
  row.cells[3].textContent = unit;
  row.cells[4].textContent = new Date().toLocaleTimeString();
  if (value !== "" && Number.isFinite(numeric)) chart.add(`${device} ${name}`, numeric);
  if (!$("device").dataset.touched && device !== "?") $("device").value = device;
}

const client = new StompJs.Client({
  brokerURL,
  reconnectDelay: 2000,
  heartbeatIncoming: 10000,
  heartbeatOutgoing: 10000,
  connectHeaders: params.get("login") ? { login: params.get("login"), passcode: params.get("passcode") || "" } : {},
});

client.onConnect = () => {
  setStatus("subscribing…", "connecting");
  client.watchForReceipt("sensors-subscribed", () => {
    setStatus("live", "live");
    $("send").disabled = false;
  });
  client.subscribe("/topic/sensors/#", (message) => {
    showReading(message.headers.destination.replace(/^\/topic\//, ""), message.body);
  }, { receipt: "sensors-subscribed" });
};
client.onStompError = (frame) => setStatus(`error: ${frame.headers.message || "refused"}`, "error");
client.onWebSocketClose = (event) => {
  $("send").disabled = true;
  setStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}), retrying…`, "error");
};
client.activate();

$("device").addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
let sentCount = 0;
$("command-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const device = $("device").value.trim();
  const command = $("command").value.trim();
  if (!device || !command || !client.connected) return;
  const receipt = `command-${++sentCount}`;
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} → ${device}: ${command} (sending…)`;
  $("sent").prepend(item);
  client.watchForReceipt(receipt, () => {
    item.textContent = `${new Date().toLocaleTimeString()} → ${device}: ${command} (accepted by the broker)`;
    item.className = "accepted";
  });
  client.publish({ destination: `/topic/commands/${device}`, body: command, headers: { receipt } });
});
