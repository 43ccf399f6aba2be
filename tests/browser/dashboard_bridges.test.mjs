// The dashboard's Bridges table in headless Debian Chromium: a tern with a
// [[bridge]] to a real `mosquitto` (the remote, on a loopback port picked
// here) shows the bridge connected with its address and counts; once the
// remote is stopped, disconnected with the last error and what waits for it.
//
// Environment: see helpers.mjs; `mosquitto` on the PATH (Debian's package).
// Run: cd tests/browser && npm ci && npm test

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import mqtt from "mqtt";

import {
  WAIT,
  mqttClient,
  newWatchedPage,
  nextMessage,
  screenshotDir,
  ternAndChromium,
  timeout,
} from "./helpers.mjs";

/** A loopback port nothing listens on now. */
async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** Starts mosquitto on `port` (anonymous, no queue limit); resolves once it takes an MQTT client. */
async function startMosquitto(dir, port) {
  const conf = path.join(dir, "mosquitto.conf");
  fs.writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n`);
  const log = fs.openSync(path.join(dir, "mosquitto.log"), "a");
  const proc = spawn("mosquitto", ["-c", conf], { stdio: ["ignore", log, log] });
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      const probe = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 1000 });
      await probe.endAsync();
      return proc;
    } catch (e) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`mosquitto did not start: ${e}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function stopMosquitto(proc) {
  if (proc.exitCode !== null) return;
  proc.kill("SIGTERM");
  await Promise.race([once(proc, "exit"), timeout(WAIT, "mosquitto to exit")]);
}

describe("the dashboard's bridges table", () => {
  const TOKEN = "dash-bridge-token";
  const remote = { port: 0, proc: null, dir: null };
  before(async () => {
    remote.dir = fs.mkdtempSync(path.join(os.tmpdir(), "tern-browser-remote-"));
    remote.port = await freePort();
    remote.proc = await startMosquitto(remote.dir, remote.port);
  });
  // Registered after the hook above, so the remote's port is known when tern starts.
  const setup = ternAndChromium({
    env: { TERN_HTTP__ADMIN_TOKEN: TOKEN },
    config: () =>
      [
        "[[bridge]]",
        'name = "cloud"',
        `addresses = ["127.0.0.1:${remote.port}"]`,
        'protocol = "mqttv311"',
        'topics = ["dash/bridge/# out 1"]',
        "reconnect_min_secs = 1",
        "reconnect_max_secs = 2",
      ].join("\n"),
  });
  after(async () => {
    if (remote.proc) await stopMosquitto(remote.proc);
    fs.rmSync(remote.dir, { recursive: true, force: true });
  });

  /** Reads the bridge row's cells until they satisfy `check` (the dashboard polls the API); returns them. */
  async function waitForRow(page, check, what) {
    const deadline = Date.now() + WAIT;
    let cells = [];
    while (Date.now() < deadline) {
      cells = await page.$$eval('#bridges tr[data-bridge="cloud"] td', (tds) => tds.map((td) => td.textContent));
      if (cells.length > 0 && check(cells)) return cells;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`bridge row not ${what} within ${WAIT} ms: ${JSON.stringify(cells)}`);
  }

  test("shows the bridge connected with its counts, then disconnected with the last error", async () => {
    const { page, problems } = await newWatchedPage(setup.context);
    const watcher = await mqttClient(remote.port, `dash-remote-watcher-${process.pid}`);
    const device = await mqttClient(setup.tern.mqtt, `dash-bridged-device-${process.pid}`);
    try {
      await watcher.subscribeAsync("dash/bridge/#", { qos: 1 });
      await page.goto(`http://127.0.0.1:${setup.tern.http}/dashboard#token=${TOKEN}`);
      // bridge, connected, queued, sent, received, dropped, last error
      let cells = await waitForRow(page, (c) => c[1].startsWith("yes"), "connected");
      assert.deepEqual(cells.slice(0, 2), ["cloud", `yes (127.0.0.1:${remote.port})`]);

      for (let i = 0; i < 3; i++) {
        const arrived = nextMessage(watcher, `dash/bridge/${i}`);
        await device.publishAsync(`dash/bridge/${i}`, `reading ${i}`, { qos: 1 });
        assert.equal(await arrived, `reading ${i}`, "the remote subscriber got it through the bridge");
      }
      cells = await waitForRow(page, (c) => c[3] === "3", "3 sent");
      assert.deepEqual(cells, ["cloud", `yes (127.0.0.1:${remote.port})`, "0", "3", "0", "0", ""]);
      assert.ok(await page.isHidden("#bridges-empty"));
      await page.screenshot({ path: path.join(screenshotDir, "dashboard-bridge-connected.png"), fullPage: true });

      watcher.end(true);
      await stopMosquitto(remote.proc);
      cells = await waitForRow(page, (c) => c[1] === "no" && c[6] !== "", "disconnected with an error");
      // What is published meanwhile waits for the remote, counted as queued.
      for (let i = 3; i < 5; i++) await device.publishAsync(`dash/bridge/${i}`, `reading ${i}`, { qos: 1 });
      cells = await waitForRow(page, (c) => c[2] === "2", "2 queued");
      assert.equal(cells[1], "no");
      assert.equal(cells[3], "3", "sent stays at what the remote acknowledged");
      assert.notEqual(cells[6], "", "the last error is shown");
      await page.screenshot({ path: path.join(screenshotDir, "dashboard-bridge-down.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      watcher.end(true);
      device.end(true);
      await page.close();
    }
  });
});
