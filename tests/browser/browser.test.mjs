// Browser tests: headless Debian Chromium (driven by playwright-core, never a
// downloaded browser) against the real `tern` binary.
//
// - The demo page examples/web (stompjs, served by Tern itself from web.root)
//   shows readings an MQTT client publishes, and a command sent from the page
//   reaches an MQTT subscriber.
// - An mqtt.js page over WebSocket round-trips QoS 0/1/2 and a retained message,
//   for MQTT 3.1, 3.1.1 and 5.0.
//
// - The demo as the README runs it: examples/device (rumqttc) feeds the page and
//   obeys a command sent from it.
// - The built-in dashboard (HTTP listener, /dashboard#token=…) lists an MQTT
//   client and its topic, and disconnects it with its button (MQTT 5: 0x98).
// - An EventSource page on HTTP /v1/events shows what an MQTT client publishes,
//   and reconnects by itself after the server closed the stream (a restart).
// - With a stream covering its topic, that page resumes with Last-Event-ID after a
//   restart closed its stream: the ids are the dense range of stream offsets.
// - The dashboard lists a declared stream with its offsets, counts and readers.
//
// Environment: see helpers.mjs. Run: cd tests/browser && npm ci && npm test
// (dashboard_bridges.test.mjs has the dashboard's bridges table).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import mqtt from "mqtt";
import { chromium } from "playwright-core";

import {
  here,
  repo,
  ternBin,
  deviceBin,
  chromiumPath,
  screenshotDir,
  WAIT,
  CHROMIUM_ARGS,
  makeWebRoot,
  startTern,
  readStderr,
  timeout,
  stopTern,
  mqttClient,
  nextMessage,
  waitForCell,
  newWatchedPage,
  configArgs,
  ternAndChromium,
} from "./helpers.mjs";

describe("browser over WebSocket", () => {
  const setup = ternAndChromium({ site: true });

  test("the vendored stompjs bundle is the one npm installs", () => {
    const vendored = fs.readFileSync(path.join(repo, "examples/web/vendor/stomp.umd.min.js"));
    const installed = fs.readFileSync(path.join(here, "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js"));
    assert.ok(vendored.equals(installed), "examples/web/vendor/stomp.umd.min.js differs from node_modules");
  });

  test("the stompjs page shows MQTT readings and its commands reach MQTT devices", async () => {
    const page = await setup.context.newPage();
    const consoleErrors = [];
    page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
    const device = await mqttClient(setup.tern.mqtt, "test-device");
    try {
      await page.goto(`http://127.0.0.1:${setup.tern.ws}/`);
      // "live" is set when the RECEIPT of the SUBSCRIBE arrives: readings published now are seen.
      await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, {
        timeout: WAIT,
      });

      const readings = [
        ["sensors/dev-a/temperature", { value: 21.5, unit: "°C" }],
        ["sensors/dev-a/humidity", { value: 40.25, unit: "%" }],
        ["sensors/dev-a/temperature", { value: 22, unit: "°C" }],
        ["sensors/dev-b/temperature", 19.5],
        ["sensors/dev-a/temperature", { value: 22.75, unit: "°C" }],
      ];
      for (const [topic, value] of readings) {
        await device.publishAsync(topic, JSON.stringify(value), { qos: 1 });
      }
      const cell = (topic) =>
        page.waitForFunction(
          ([t]) => document.querySelector(`tr[data-topic="${t}"] td.value`)?.textContent,
          [topic],
          { timeout: WAIT },
        );
      await page.waitForFunction(
        () => document.querySelector('tr[data-topic="sensors/dev-a/temperature"] td.value')?.textContent === "22.75",
        null,
        { timeout: WAIT },
      );
      assert.equal(await (await cell("sensors/dev-a/humidity")).jsonValue(), "40.25");
      assert.equal(await (await cell("sensors/dev-b/temperature")).jsonValue(), "19.5");
      const table = await page.textContent("#readings tbody");
      for (const text of ["dev-a", "dev-b", "temperature", "humidity", "°C", "%"]) {
        assert.ok(table.includes(text), `table lacks ${text}: ${table}`);
      }
      assert.equal(await page.evaluate(() => window.ternChart.pointCount()), 5);
      assert.deepEqual(
        await page.$$eval("#legend span", (spans) => spans.map((s) => s.textContent).sort()),
        ["dev-a humidity", "dev-a temperature", "dev-b temperature"],
      );
      // The chart drew something: some pixels are not blank.
      const inked = await page.evaluate(() => {
        const c = document.getElementById("chart");
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n;
      });
      assert.ok(inked > 500, `chart looks empty (${inked} pixels drawn)`);

      // A command from the page reaches the MQTT device.
      await device.subscribeAsync("commands/#", { qos: 1 });
      const command = nextMessage(device, "commands/dev-a");
      await page.fill("#device", "dev-a");
      await page.fill("#command", "interval 500");
      await page.click("#send");
      assert.equal(await command, "interval 500");
      await page.waitForSelector("#sent li.accepted", { timeout: WAIT });
      assert.match(await page.textContent("#sent"), /dev-a: interval 500 \(accepted by the broker\)/);

      await page.screenshot({ path: path.join(screenshotDir, "stomp-live-sensors.png"), fullPage: true });
      assert.deepEqual(consoleErrors, []);
    } finally {
      await device.endAsync();
      await page.close();
    }
  });

  test("the demo: examples/device feeds the page and obeys its command", async () => {
    assert.ok(fs.existsSync(deviceBin), `device binary not found at ${deviceBin} (cargo build --workspace)`);
    const page = await setup.context.newPage();
    const device = spawn(deviceBin, ["--port", String(setup.tern.mqtt), "--id", "demo-1", "--interval-ms", "200"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    try {
      await page.goto(`http://127.0.0.1:${setup.tern.ws}/`);
      await waitForCell(page, "sensors/demo-1/temperature", ["."]);
      await waitForCell(page, "sensors/demo-1/humidity", ["."]);
      await waitForCell(page, "sensors/demo-1/status", ["online=true", "led=off"]);
      await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, {
        timeout: WAIT,
      });
      await page.fill("#device", "demo-1");
      await page.fill("#command", "led on");
      await page.click("#send");
      // The device says what it did in its retained status reading.
      await waitForCell(page, "sensors/demo-1/status", ["led=on", "last_command=led on"]);
      // Enough readings for a line on the chart.
      await page.waitForFunction(() => window.ternChart.pointCount() >= 6, null, { timeout: WAIT });
      await page.screenshot({ path: path.join(screenshotDir, "demo-device.png"), fullPage: true });
    } finally {
      device.kill("SIGINT");
      await Promise.race([once(device, "exit"), timeout(WAIT, "the device to exit")]);
      await page.close();
    }
  });

  for (const [level, name] of [[3, "3.1"], [4, "3.1.1"], [5, "5.0"]]) {
    test(`an mqtt.js page round-trips QoS 0/1/2 and a retained message (MQTT ${name})`, async () => {
      const page = await setup.context.newPage();
      try {
        await page.goto(`http://127.0.0.1:${setup.tern.ws}/test/mqtt.html?v=${level}`);
        await page.waitForFunction(() => document.getElementById("result").textContent !== "running…", null, {
          timeout: WAIT,
        });
        await page.screenshot({ path: path.join(screenshotDir, `mqttjs-v${level}.png`), fullPage: true });
        assert.equal(await page.textContent("#result"), "ok");
        const rows = await page.$$eval("#log tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
        const prefix = `rt/v${level}`;
        assert.deepEqual(rows.slice(1), [
          ["round trip", `${prefix}/qos/0`, "0", "false", "hello at qos 0"],
          ["round trip", `${prefix}/qos/1`, "1", "false", "hello at qos 1"],
          ["round trip", `${prefix}/qos/2`, "2", "false", "hello at qos 2"],
          ["published retained", `${prefix}/retained`, "1", "true", "kept for later"],
          ["retained to new subscriber", `${prefix}/retained`, "1", "true", "kept for later"],
        ]);
      } finally {
        await page.close();
      }
    });
  }
});

describe("the dashboard", () => {
  const TOKEN = "dash-browser-token";
  const setup = ternAndChromium({
    env: { TERN_HTTP__ADMIN_TOKEN: TOKEN },
    config: '[[stream]]\nname = "dash-feed"\ntopics = ["dash/feed/#"]\n',
  });

  const watchedPage = () => newWatchedPage(setup.context);

  test("lists a connected MQTT client and its topic, and disconnects it with its button", async () => {
    assert.ok(setup.tern.http, `no http=ADDR in banner: ${setup.tern.banner}`);
    const { page, problems } = await watchedPage();
    const clientId = `dash-sensor-${process.pid}`;
    const topic = "dash/sensor/temperature";
    const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${setup.tern.mqtt}`, {
      clientId,
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    const serverDisconnect = Promise.race([
      once(device, "disconnect").then(([packet]) => packet),
      timeout(WAIT * 2, "the broker's DISCONNECT"),
    ]);
    serverDisconnect.catch(() => {});
    const closed = once(device, "close");
    // Top topics are sampled (1 publish in 8) over the last 10–20 s: keep publishing.
    for (let i = 0; i < 40; i++) await device.publishAsync(topic, `${20 + i / 10}`, { qos: 1 });
    const feeder = setInterval(() => device.connected && device.publish(topic, "21.5", { qos: 0 }), 100);
    const row = `#clients tr[data-client-id="${clientId}"]`;
    try {
      await page.goto(`http://127.0.0.1:${setup.tern.http}/dashboard#token=${TOKEN}`);
      await page.waitForSelector(row, { timeout: WAIT });
      assert.equal(new URL(page.url()).hash, "", "the token is taken out of the address bar");
      const cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
      assert.deepEqual(cells.slice(0, 3), [clientId, "mqtt", "mqtt"]);
      assert.match(cells[3], /^127\.0\.0\.1:\d+$/);
      assert.equal(cells[8], "Disconnect");
      await page.waitForFunction(() => Number(document.getElementById("connections").textContent) >= 1, null, {
        timeout: WAIT,
      });
      await page.waitForSelector(`#top-topics tr[data-topic="${topic}"]`, { timeout: WAIT });
      assert.match(await page.textContent("#version"), /^tern \d+\.\d+\.\d+/);
      // Two polls make one rate sample; the chart draws from the third on.
      await page.waitForFunction(() => window.ternDashboard.sampleCount() >= 2, null, { timeout: WAIT });
      assert.equal(await page.textContent("#live"), "live");
      await page.screenshot({ path: path.join(screenshotDir, "dashboard.png"), fullPage: true });

      clearInterval(feeder);
      await page.click(`${row} button.disconnect`);
      const packet = await serverDisconnect;
      assert.equal(packet.reasonCode, 0x98, "MQTT 5 DISCONNECT: administrative action");
      await Promise.race([closed, timeout(WAIT, "the MQTT connection to close")]);
      await page.waitForSelector(row, { state: "detached", timeout: WAIT });
      assert.equal(await page.textContent("#status"), `Disconnected ${clientId}.`);
      await page.screenshot({ path: path.join(screenshotDir, "dashboard-disconnected.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      clearInterval(feeder);
      device.end(true);
      await page.close();
    }
  });

  test("shows a declared stream with its offsets, counts and readers after some publishes", async () => {
    const { page, problems } = await watchedPage();
    const device = await mqttClient(setup.tern.mqtt, `dash-feeder-${process.pid}`);
    // A reader of the stream (MQTT 3.1.1 form: the position in the filter).
    const reader = await mqttClient(setup.tern.mqtt, `dash-reader-${process.pid}`);
    const row = '#streams tr[data-stream="dash-feed"]';
    try {
      await reader.subscribeAsync("$stream/dash-feed/@first/#", { qos: 1 });
      for (let i = 0; i < 7; i++) await device.publishAsync(`dash/feed/${i % 2}`, "x".repeat(10), { qos: 1 });
      await page.goto(`http://127.0.0.1:${setup.tern.http}/dashboard#token=${TOKEN}`);
      // The dashboard polls: wait for the counts of all seven.
      await page.waitForFunction(
        (sel) => document.querySelector(`${sel} td:nth-child(5)`)?.textContent === "7",
        row,
        { timeout: WAIT },
      );
      const cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
      // stream, topics, first offset, last offset, messages, bytes (topic + payload), readers, consumers
      assert.deepEqual(cells.slice(0, 5), ["dash-feed", "dash/feed/#", "0", "6", "7"]);
      assert.equal(cells[5], "147 B", "7 × (11-byte topic + 10-byte payload)");
      assert.equal(cells[6], "1");
      assert.ok(await page.isHidden("#streams-empty"));
      await page.screenshot({ path: path.join(screenshotDir, "dashboard-streams.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      device.end(true);
      reader.end(true);
      await page.close();
    }
  });

  test("asks for the token, says when it is refused, and starts with a good one", async () => {
    const { page } = await watchedPage();
    try {
      await page.goto(`http://127.0.0.1:${setup.tern.http}/dashboard`);
      await page.waitForSelector("#token-form", { state: "visible", timeout: WAIT });
      assert.equal(await page.textContent("#live"), "token needed");

      await page.goto(`http://127.0.0.1:${setup.tern.http}/dashboard#token=wrong`);
      await page.waitForSelector("#error", { state: "visible", timeout: WAIT });
      assert.match(await page.textContent("#error"), /^Admin token refused: missing or wrong admin token/);
      assert.ok(await page.isVisible("#token-form"));

      await page.fill("#token", TOKEN);
      await page.click("#token-form button[type=submit]");
      await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, {
        timeout: WAIT,
      });
      assert.ok(await page.isHidden("#error"));
      assert.ok(await page.isHidden("#login"));
    } finally {
      await page.close();
    }
  });
});

describe("HTTP server-sent events", () => {
  let tmp;
  let site;
  let tern;
  let context;

  before(async () => {
    assert.ok(fs.existsSync(ternBin), `tern binary not found at ${ternBin} (build it or set TERN_BIN)`);
    assert.ok(fs.existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install chromium chromium-driver)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tern-browser-sse-"));
    site = makeWebRoot(tmp);
    tern = await startTern(tmp, site);
    context = await chromium.launchPersistentContext(path.join(tmp, "chromium-profile"), {
      executablePath: chromiumPath,
      headless: true,
      args: CHROMIUM_ARGS,
    });
  });

  after(async () => {
    await context?.close();
    if (tern) assert.equal(await stopTern(tern), 0, `tern did not exit 0 on SIGTERM:\n${readStderr(tmp)}`);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Waits until the page's list shows `text`. */
  function waitForItem(page, text) {
    return page.waitForFunction(
      (wanted) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === wanted),
      text,
      { timeout: WAIT },
    );
  }

  test("an EventSource page receives MQTT publishes and reconnects after the server closes the stream", async () => {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    try {
      await page.goto(`http://127.0.0.1:${tern.ws}/test/events.html?topic=live/%23`);
      await page.waitForFunction(() => document.getElementById("opens").textContent === "1", null, { timeout: WAIT });
      const first = await mqttClient(tern.mqtt, "sse-publisher-1");
      await first.publishAsync("live/room1", "21.5", { qos: 1 });
      await waitForItem(page, "live/room1 21.5");
      await first.endAsync();

      // A restart closes the stream; the browser reconnects to the new broker on
      // the same port by itself (retry: 1000) and gets what is published there.
      assert.equal(await stopTern(tern), 0, `tern did not exit 0 on SIGTERM:\n${readStderr(tmp)}`);
      const port = tern.ws;
      tern = null;
      tern = await startTern(tmp, site, { TERN_WEBSOCKET__BIND: `127.0.0.1:${port}` });
      await page.waitForFunction(() => document.getElementById("opens").textContent === "2", null, { timeout: WAIT });
      const second = await mqttClient(tern.mqtt, "sse-publisher-2");
      await second.publishAsync("live/room2", "19.0", { qos: 1 });
      await waitForItem(page, "live/room2 19.0");
      await second.endAsync();
      await page.screenshot({ path: path.join(screenshotDir, "events.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });
});

describe("HTTP server-sent events resumed from a stream", () => {
  const CONFIG = '[[stream]]\nname = "feed"\ntopics = ["feed/#"]\n';
  let tmp;
  let site;
  let args;
  let tern;
  let context;

  before(async () => {
    assert.ok(fs.existsSync(ternBin), `tern binary not found at ${ternBin} (build it or set TERN_BIN)`);
    assert.ok(fs.existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install chromium chromium-driver)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tern-browser-resume-"));
    site = makeWebRoot(tmp);
    args = configArgs(tmp, CONFIG);
    tern = await startTern(tmp, site, {}, args);
    context = await chromium.launchPersistentContext(path.join(tmp, "chromium-profile"), {
      executablePath: chromiumPath,
      headless: true,
      args: CHROMIUM_ARGS,
    });
  });

  after(async () => {
    await context?.close();
    if (tern) assert.equal(await stopTern(tern), 0, `tern did not exit 0 on SIGTERM:\n${readStderr(tmp)}`);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Publishes feed/n for n in [from, to) at QoS 1 (each acked: stored in the stream). */
  async function publishRange(from, to) {
    const client = await mqttClient(tern.mqtt, `resume-publisher-${from}`);
    for (let n = from; n < to; n++) await client.publishAsync(`feed/${n % 3}`, `m${n}`, { qos: 1 });
    await client.endAsync();
  }

  /** Waits until the page lists `count` events; returns their ids and texts. */
  async function waitForCount(page, count) {
    await page.waitForFunction((n) => document.querySelectorAll("#log li").length >= n, count, { timeout: WAIT });
    return page.$$eval("#log li", (lis) => lis.map((li) => ({ id: Number(li.dataset.id), text: li.textContent })));
  }

  test("EventSource resumes with Last-Event-ID after the server closed the stream: nothing lost, nothing twice", async () => {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    try {
      await page.goto(`http://127.0.0.1:${tern.ws}/test/events.html?topic=feed/%23`);
      await page.waitForFunction(() => document.getElementById("opens").textContent === "1", null, { timeout: WAIT });
      await publishRange(0, 10);
      await waitForCount(page, 10);

      // Hold the browser's reconnection until more was published while it was away,
      // so the resume has to replay from the stream.
      let release;
      const released = new Promise((resolve) => (release = resolve));
      let held;
      const reconnected = new Promise((resolve) => (held = resolve));
      await page.route("**/v1/events?*", async (route) => {
        held(route.request().url());
        await released;
        await route.continue();
      });

      // A restart closes the stream (the stream and its offsets are kept in the store).
      assert.equal(await stopTern(tern), 0, `tern did not exit 0 on SIGTERM:\n${readStderr(tmp)}`);
      const port = tern.ws;
      tern = null;
      tern = await startTern(tmp, site, { TERN_WEBSOCKET__BIND: `127.0.0.1:${port}` }, args);
      // (The interception does not show Last-Event-ID, which the network stack
      // adds; the dense ids below prove it was sent.)
      await Promise.race([reconnected, timeout(WAIT, "the EventSource to reconnect")]);
      await publishRange(10, 20);
      release();
      await page.waitForFunction(() => document.getElementById("opens").textContent === "2", null, { timeout: WAIT });
      await publishRange(20, 25);
      const events = await waitForCount(page, 25);
      await page.unroute("**/v1/events?*");

      assert.deepEqual(
        events.map((e) => e.id),
        Array.from({ length: 25 }, (_, n) => n),
        "the ids are the dense range of stream offsets",
      );
      assert.deepEqual(
        events.map((e) => e.text),
        Array.from({ length: 25 }, (_, n) => `feed/${n % 3} m${n}`),
      );
      await page.screenshot({ path: path.join(screenshotDir, "events-resumed.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });
});
