// Tern dashboard: polls the admin API and draws what it answers.
//
// The admin token comes from the URL fragment (#token=…, never sent to the
// server) or the form, and is kept in this tab's sessionStorage. Every API call
// carries it as `Authorization: Bearer …`. Text from clients (ids, usernames,
// topics) is only ever set with textContent.

"use strict";

(() => {
  const POLL_MS = 1000;
  /** Seconds of history the chart shows. */
  const CHART_SECONDS = 120;
  const TOKEN_KEY = "tern.adminToken";
  const COLORS = { in: "#1f77b4", out: "#e07b00", grid: "#e3e7ec", text: "#5f6b7a" };

  const $ = (id) => document.getElementById(id);

  let token = null;
  let pollTimer = null;
  /** Bumped when polling stops or restarts: answers to an older round are dropped. */
  let pollRound = 0;
  /** The previous stats answer: { at (ms), received, sent }. */
  let previous = null;
  /** Rates for the chart: { at (ms), in, out }, oldest first. */
  const samples = [];

  // --- the token -------------------------------------------------------------

  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      // Out of the address bar and the tab's history.
      window.history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken(message) {
    stopPolling();
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("login").hidden = false;
    $("forget").hidden = true;
    setLive("token needed", "down");
    showError(message);
    $("token").focus();
  }

  function useToken(value) {
    token = value;
    $("login").hidden = true;
    $("forget").hidden = false;
    showError(null);
    previous = null;
    startPolling();
  }

  // --- the API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "the broker does not answer (is it running?)");
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const said = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
      throw new ApiError(response.status, said);
    }
    return body;
  }

  /** A 401 or 403 stops the page until a (new) token is given; other errors are retried. */
  function handleError(error) {
    if (error.status === 403) {
      askForToken(`Admin API disabled: ${error.message}`);
    } else if (error.status === 401) {
      askForToken(`Admin token refused: ${error.message}`);
    } else {
      setLive("offline", "down");
      showError(`Cannot read the broker: ${error.message}`);
    }
  }

  // --- polling ---------------------------------------------------------------

  /** Polls now, then every POLL_MS. */
  function startPolling() {
    stopPolling();
    poll(pollRound);
  }

  function stopPolling() {
    pollRound++;
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = null;
  }

  async function poll(round) {
    pollTimer = null;
    try {
      const [stats, clients, streams, nodes, bridges] = await Promise.all([
        api("GET", "/api/stats"),
        api("GET", "/api/clients"),
        api("GET", "/api/streams"),
        api("GET", "/api/nodes"),
        api("GET", "/api/bridges"),
      ]);
      if (round !== pollRound) return;
      showError(null);
      setLive("live", "live");
      showStats(stats);
      showClients(clients);
      showStreams(streams);
      showNodes(nodes);
      showBridges(bridges.bridges);
    } catch (error) {
      if (round !== pollRound) return;
      handleError(error);
    }
    if (round === pollRound && token !== null) pollTimer = setTimeout(() => poll(round), POLL_MS);
  }

  // --- showing ---------------------------------------------------------------

  function setLive(text, state) {
    const badge = $("live");
    badge.textContent = text;
    badge.className = `badge ${state}`;
  }

  function showError(message) {
    const box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function setStatus(message, state) {
    const line = $("status");
    line.textContent = message;
    line.className = `status ${state}`;
  }

  const number = new Intl.NumberFormat("en");

  function formatRate(value) {
    if (value >= 100) return number.format(Math.round(value));
    return value.toFixed(1);
  }

  function formatBytes(value) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) {
      value /= 1024;
      i++;
    }
    return `${i === 0 ? value : value.toFixed(1)} ${units[i]}`;
  }

  function formatUptime(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return `up ${d > 0 ? `${d}d ` : ""}${h}h ${pad(m)}m ${pad(s)}s`;
  }

  function formatTime(unixSeconds) {
    const t = new Date(unixSeconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return (
      `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
      `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`
    );
  }

  /** Cluster mode only: this node's name and the nodes alive. */
  function showNodes(nodes) {
    const section = $("cluster");
    section.hidden = !nodes || !nodes.node;
    if (section.hidden) return;
    $("cluster-node").textContent = `(this node: ${nodes.node}${nodes.nats_connected ? "" : ", NATS down"})`;
    $("cluster-nodes").textContent = nodes.nodes.map((n) => n.node).join(" · ");
  }

  function showStats(stats) {
    $("version").textContent = `tern ${stats.version}`;
    $("uptime").textContent = formatUptime(stats.uptime_secs);
    const c = stats.connections;
    $("connections").textContent = number.format(c.total);
    $("connections-detail").textContent = `MQTT ${c.mqtt} · STOMP ${c.stomp}`;
    const m = stats.messages;
    $("total-in").textContent = `${number.format(m.received)} total · ${formatBytes(m.bytes_received)}`;
    $("total-out").textContent = `${number.format(m.sent)} total · ${formatBytes(m.bytes_sent)}`;
    $("sessions-online").textContent = number.format(stats.sessions.online);
    $("sessions-offline").textContent = number.format(stats.sessions.offline);
    $("subscriptions").textContent = number.format(stats.subscriptions);
    $("retained").textContent = number.format(stats.retained);
    $("queued").textContent = number.format(stats.queued.sessions + stats.queued.queues);
    addSample(m.received, m.sent);
    showTopTopics(stats.top_topics);
    drawChart();
  }

  /** Rates from the difference of two totals (a restarted broker starts over). */
  function addSample(received, sent) {
    const at = performance.now();
    if (previous && received >= previous.received && sent >= previous.sent && at > previous.at) {
      const seconds = (at - previous.at) / 1000;
      const rate = { at, in: (received - previous.received) / seconds, out: (sent - previous.sent) / seconds };
      samples.push(rate);
      $("rate-in").textContent = formatRate(rate.in);
      $("rate-out").textContent = formatRate(rate.out);
    }
    previous = { at, received, sent };
    while (samples.length > 0 && samples[0].at < at - CHART_SECONDS * 1000) samples.shift();
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function showTopTopics(topics) {
    const rows = topics.map((t) => {
      const tr = document.createElement("tr");
      tr.dataset.topic = t.topic;
      tr.append(cell(t.topic, "topic"), cell(number.format(t.messages), "num"), cell(formatRate(t.rate), "num"));
      return tr;
    });
    document.querySelector("#top-topics tbody").replaceChildren(...rows);
    $("top-topics-empty").hidden = rows.length > 0;
  }

  function showStreams(streams) {
    const rows = streams.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.stream = s.name;
      const consumers = s.consumers.map((c) => `${c.name} (${number.format(c.lag)})`).join(", ");
      tr.append(
        cell(s.name, "topic"),
        cell(s.topics.join(" "), "topic"),
        cell(number.format(s.first_offset), "num"),
        cell(s.last_offset === null ? "–" : number.format(s.last_offset), "num"),
        cell(number.format(s.messages), "num"),
        cell(formatBytes(s.bytes), "num"),
        cell(number.format(s.readers), "num"),
        cell(consumers),
      );
      return tr;
    });
    document.querySelector("#streams tbody").replaceChildren(...rows);
    $("streams-empty").hidden = rows.length > 0;
  }

  function showBridges(bridges) {
    const rows = bridges.map((b) => {
      const tr = document.createElement("tr");
      tr.dataset.bridge = b.name;
      tr.append(
        cell(b.name, "topic"),
        cell(b.connected ? `yes (${b.address})` : "no"),
        cell(number.format(b.queued), "num"),
        cell(number.format(b.sent), "num"),
        cell(number.format(b.received), "num"),
        cell(number.format(b.dropped), "num"),
        cell(b.last_error || ""),
      );
      return tr;
    });
    document.querySelector("#bridges tbody").replaceChildren(...rows);
    $("bridges-empty").hidden = rows.length > 0;
  }

  /** Client rows by client id, updated in place so a button is not replaced under the pointer. */
  const clientRows = new Map();

  function showClients(clients) {
    const tbody = document.querySelector("#clients tbody");
    const seen = new Set();
    clients.forEach((client, index) => {
      const id = client.client_id;
      seen.add(id);
      let row = clientRows.get(id);
      if (!row) {
        row = newClientRow(id);
        clientRows.set(id, row);
      }
      const values = [
        id,
        client.protocol,
        client.listener,
        client.address,
        client.username ?? "—",
        formatTime(client.connected_since),
        number.format(client.queue_depth),
        number.format(client.subscriptions),
      ];
      values.forEach((value, i) => {
        if (row.cells[i].textContent !== value) row.cells[i].textContent = value;
      });
      if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] ?? null);
    });
    for (const [id, row] of clientRows) {
      if (!seen.has(id)) {
        row.remove();
        clientRows.delete(id);
      }
    }
    $("clients-empty").hidden = clients.length > 0;
  }

  function newClientRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.clientId = id;
    // client id, protocol, listener, address, username, since, queue, subscriptions
    for (const className of ["id", "", "", "address", "user", "", "num", "num"]) tr.append(cell("", className));
    const button = document.createElement("button");
    button.type = "button";
    button.className = "disconnect";
    button.textContent = "Disconnect";
    button.addEventListener("click", () => disconnect(id, button));
    const actions = document.createElement("td");
    actions.append(button);
    tr.append(actions);
    return tr;
  }

  async function disconnect(id, button) {
    button.disabled = true;
    setStatus(`Disconnecting ${id}…`, "");
    try {
      await api("DELETE", `/api/clients/${encodeURIComponent(id)}`);
      setStatus(`Disconnected ${id}.`, "done");
    } catch (error) {
      button.disabled = false;
      if (error.status === 401 || error.status === 403) {
        handleError(error);
        return;
      }
      setStatus(`Could not disconnect ${id}: ${error.message}`, "failed");
    }
    startPolling();
  }

  // --- the chart -------------------------------------------------------------

  /** A round upper bound for the y axis: 1, 2 or 5 times a power of ten. */
  function niceMax(value) {
    if (value <= 1) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart() {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const pad = { left: 56, right: 12, top: 12, bottom: 24 };
    const plotWidth = width - pad.left - pad.right;
    const plotHeight = height - pad.top - pad.bottom;
    const now = performance.now();
    const top = niceMax(Math.max(0, ...samples.map((s) => Math.max(s.in, s.out))));
    const x = (at) => pad.left + plotWidth * (1 - (now - at) / (CHART_SECONDS * 1000));
    const y = (value) => pad.top + plotHeight * (1 - value / top);

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const value = (top * i) / 4;
      const py = Math.round(y(value)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, py);
      ctx.lineTo(width - pad.right, py);
      ctx.stroke();
      ctx.fillText(number.format(value), pad.left - 6, py);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let s = CHART_SECONDS; s >= 0; s -= 30) {
      const px = x(now - s * 1000);
      ctx.fillText(s === 0 ? "now" : `-${s}s`, px, height - pad.bottom + 6);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.left, pad.top - 2, plotWidth, plotHeight + 4);
    ctx.clip();
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    for (const series of ["in", "out"]) {
      ctx.strokeStyle = COLORS[series];
      ctx.beginPath();
      samples.forEach((s, i) => {
        if (i === 0) ctx.moveTo(x(s.at), y(s[series]));
        else ctx.lineTo(x(s.at), y(s[series]));
      });
      ctx.stroke();
      const last = samples[samples.length - 1];
      if (last) {
        ctx.fillStyle = COLORS[series];
        ctx.beginPath();
        ctx.arc(x(last.at), y(last[series]), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.restore();
  }

  // --- start -----------------------------------------------------------------

  /** For tests and the curious: how many rate samples the chart holds. */
  window.ternDashboard = { sampleCount: () => samples.length };

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    useToken(value);
  });

  /** Cluster mode: which node holds a client id (the cluster's ownership bucket). */
  $("locate").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("locate-id").value;
    const result = $("locate-result");
    try {
      const found = await api("GET", `/api/cluster/clients/${encodeURIComponent(id)}`);
      result.textContent = `${found.node}${found.this_node ? " (this node)" : ""}`;
    } catch (error) {
      result.textContent = error.message;
    }
  });

  $("forget").addEventListener("click", () => {
    askForToken(null);
    setStatus("", "");
  });

  window.addEventListener("hashchange", () => {
    const value = tokenFromFragment();
    if (value && value !== token) useToken(value);
  });
  window.addEventListener("resize", drawChart);

  const saved = tokenFromFragment();
  if (saved) {
    useToken(saved);
  } else {
    askForToken(null);
  }
  drawChart();
})();
