// Shared by the browser tests (*.test.mjs): the paths they use, starting and
// stopping the real `tern` binary on port 0, headless Debian Chromium through
// playwright-core, and small MQTT helpers.
//
// Environment: TERN_BIN (default <repo>/target/debug/tern), DEVICE_BIN (default
// tern-device beside TERN_BIN), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT_DIR (default <repo>/target/browser-screenshots).

import { after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import mqtt from "mqtt";
import { chromium } from "playwright-core";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "../..");
export const ternBin = process.env.TERN_BIN || path.join(repo, "target/debug/tern");
export const deviceBin = process.env.DEVICE_BIN || path.join(path.dirname(ternBin), "tern-device");
export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
export const screenshotDir = process.env.SCREENSHOT_DIR || path.join(repo, "target/browser-screenshots");
/** How long any single wait may take (CI machines are shared and slow). */
export const WAIT = 20_000;

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** A web root: the demo page, plus the test pages and mqtt.js under /test/. */
export function makeWebRoot(tmp) {
  const root = path.join(tmp, "site");
  fs.cpSync(path.join(repo, "examples/web"), root, { recursive: true });
  fs.cpSync(path.join(here, "pages"), path.join(root, "test"), { recursive: true });
  fs.copyFileSync(
    path.join(here, "node_modules/mqtt/dist/mqtt.min.js"),
    path.join(root, "test/mqtt.min.js"),
  );
  return root;
}

/**
 * Starts tern on port 0 everywhere (settings in `extraEnv` added, a web root
 * when given); resolves once its banner names the ports.
 */
export async function startTern(tmp, webRoot, extraEnv = {}, args = []) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TERN_")));
  delete env.RUST_LOG;
  Object.assign(env, {
    TERN_MQTT__BIND: "127.0.0.1:0",
    TERN_STOMP__BIND: "127.0.0.1:0",
    TERN_WEBSOCKET__BIND: "127.0.0.1:0",
    TERN_HTTP__BIND: "127.0.0.1:0",
    TERN_STORAGE__DATA_DIR: path.join(tmp, "data"),
    TERN_LOG__LEVEL: "debug",
    ...extraEnv,
  });
  if (webRoot) env.TERN_WEB__ROOT = webRoot;
  const stderr = fs.openSync(path.join(tmp, "tern.stderr"), "w");
  const proc = spawn(ternBin, args, { env, cwd: tmp, stdio: ["ignore", "pipe", stderr] });
  const lines = readline.createInterface({ input: proc.stdout });
  const banner = await Promise.race([
    once(lines, "line").then(([line]) => line),
    once(proc, "exit").then(([code]) => {
      throw new Error(`tern exited (${code}) before its banner:\n${readStderr(tmp)}`);
    }),
    timeout(WAIT, "tern banner"),
  ]);
  lines.on("line", () => {});
  const endpoints = Object.fromEntries(
    [...banner.matchAll(/(\w+)=([\d.]+):(\d+)/g)].map(([, name, , port]) => [name, Number(port)]),
  );
  assert.ok(endpoints.ws, `no ws=ADDR in banner: ${banner}`);
  return { proc, banner, ...endpoints };
}

export function readStderr(tmp) {
  try {
    return fs.readFileSync(path.join(tmp, "tern.stderr"), "utf8").slice(-20_000);
  } catch {
    return "";
  }
}

export function timeout(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref());
}

export async function stopTern(tern) {
  if (tern.proc.exitCode !== null) return tern.proc.exitCode;
  tern.proc.kill("SIGTERM");
  const [code] = await Promise.race([once(tern.proc, "exit"), timeout(WAIT, "tern to exit")]);
  return code;
}

/** A connected MQTT client over plain TCP (the device side). */
export async function mqttClient(port, clientId) {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId, protocolVersion: 4, reconnectPeriod: 0 });
}

/** The next message on `topic`, or a rejection after WAIT. */
export function nextMessage(client, topic) {
  return Promise.race([
    new Promise((resolve) => {
      const handler = (t, payload) => {
        if (t !== topic) return;
        client.removeListener("message", handler);
        resolve(payload.toString());
      };
      client.on("message", handler);
    }),
    timeout(WAIT, `an MQTT message on ${topic}`),
  ]);
}

/** Waits until the readings table's value for `topic` contains every one of `needles`. */
export function waitForCell(page, topic, needles) {
  return page.waitForFunction(
    ([t, wanted]) => {
      const text = document.querySelector(`tr[data-topic="${t}"] td.value`)?.textContent ?? "";
      return text !== "" && wanted.every((n) => text.includes(n));
    },
    [topic, needles],
    { timeout: WAIT },
  );
}

/**
 * Writes `config` (TOML, or a function that returns it when tern starts, for
 * settings known only then) into `tmp`; the command line that loads it.
 */
export function configArgs(tmp, config) {
  if (typeof config === "function") config = config();
  if (!config) return [];
  const file = path.join(tmp, "tern.toml");
  fs.writeFileSync(file, config);
  return ["--config", file];
}

/**
 * Registers before/after hooks of the enclosing describe: a tern (with the demo
 * web root when `site`, the settings in `env`, the TOML `config` file) and a
 * headless Chromium. Returns the object the hooks fill in: { tern, context }.
 */
export function ternAndChromium({ site = false, env = {}, config = null } = {}) {
  const setup = { tern: null, context: null };
  let tmp;

  before(async () => {
    assert.ok(fs.existsSync(ternBin), `tern binary not found at ${ternBin} (build it or set TERN_BIN)`);
    assert.ok(fs.existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install chromium chromium-driver)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tern-browser-"));
    fs.mkdirSync(screenshotDir, { recursive: true });
    setup.tern = await startTern(tmp, site ? makeWebRoot(tmp) : null, env, configArgs(tmp, config));
    setup.context = await chromium.launchPersistentContext(path.join(tmp, "chromium-profile"), {
      executablePath: chromiumPath,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1000, height: 1100 },
    });
  });

  after(async () => {
    await setup.context?.close();
    if (setup.tern) {
      const code = await stopTern(setup.tern);
      assert.equal(code, 0, `tern did not exit 0 on SIGTERM:\n${readStderr(tmp)}`);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  return setup;
}

/** A new page of `context` that collects console errors, uncaught exceptions and CSP violations. */
export async function newWatchedPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  return { page, problems };
}
