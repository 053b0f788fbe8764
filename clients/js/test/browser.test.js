// The library and the demo page in a real browser: Debian's Chromium,
// headless, driven by playwright-core (which downloads no browser), against
// the real fanoutd. Every page comes from a node (/demo, or /healthz as a
// blank page of the node's origin): Chromium's Local Network Access checks
// refuse requests to 127.0.0.1 from about:blank and from pages that
// Playwright serves through a route.
//
// /client/fanout.js is answered with this folder's fanout.js (with the
// node's own headers), so that the library under test is the one in the
// tree even when fanoutd was built from an older one; client.test.js checks
// that a current build serves exactly this file. /demo is the node's own
// (a page Playwright fulfils cannot open WebSockets to 127.0.0.1): its test
// of the topic chips is skipped, saying so, when fanoutd embeds an older
// demo.html.
//
// Run: node --test clients/js/test/browser.test.js
// A screenshot of the demo page after a delivery goes to
// $FANOUT_ARTIFACT_DIR (ctest sets it), else the system's temporary folder.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { ROOT, TIMEOUT_MS, grpcClient, startFanoutd, startProxy, uniqueTopic } from "./support.js";

const CHROMIUM = process.env.FANOUT_CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const ARTIFACTS = process.env.FANOUT_ARTIFACT_DIR ?? path.join(os.tmpdir(), "fanout-artifacts");

let browser;
let profile;
let node;
let api;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (deploy/install-deps.sh)`);
  profile = mkdtempSync(path.join(os.tmpdir(), "fanout-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000,
  });
  browser.setDefaultTimeout(TIMEOUT_MS);
  const library = await readFile(path.join(ROOT, "clients/js/fanout.js"), "utf8");
  await browser.route("**/client/fanout.js", async (route) => {
    const served = await route.fetch();
    await route.fulfill({ response: served, body: library });
  });
  // Anonymous clients may publish to pub.* topics (and nothing else).
  node = await startFanoutd({ args: ["--anonymous_publish=pub.>"] });
  api = grpcClient(node.grpc);
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  api?.close();
  await node?.stop();
});

// A new tab whose console errors and uncaught exceptions fail the test,
// except console errors that match `expected`.
async function newPage(t, expected = /^$/) {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("console", (m) => {
    // A blank page of the node's origin asks for /favicon.ico, which is a 404.
    if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico") && !expected.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  t.after(async () => {
    await page.close();
    assert.deepEqual(problems, [], "errors in the page");
  });
  return page;
}

test("/demo shows a message published over gRPC, with the connection state", async (t) => {
  const page = await newPage(t);
  const topic = uniqueTopic("demo");
  await page.goto(`http://${node.ws}/demo`);
  await page.locator('#state[data-state="open"]').waitFor();

  // As a user would: type the topic, press Subscribe.
  await page.fill("#topic", topic);
  await page.click('#subscribe button[type="submit"]');
  await page.locator(`#topics li[data-topic="${topic}"][data-subscribed="true"]`).waitFor();
  assert.match(await page.textContent("#hint"), new RegExp(`"topic":"${topic.replace(/\./g, "\\.")}"`));

  const { seq, subscribers } = await api.publish(topic, '{"msg":"hello from gRPC"}');
  assert.deepEqual({ seq, subscribers }, { seq: 1, subscribers: 1 });
  const row = page.locator(`#log tr.message[data-topic="${topic}"][data-seq="1"]`);
  await row.waitFor();
  assert.equal(await row.locator("td.data").textContent(), '{"msg":"hello from gRPC"}');

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = path.join(ARTIFACTS, "demo-after-delivery.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}`);

  // The page's publish form gets the node's answer. TODO(security issue):
  // once clients may publish, expect a row with the seq instead.
  await page.fill("#pub-topic", topic);
  await page.click('#publish button[type="submit"]');
  const refused = page.locator("#log tr.publish-error");
  await refused.waitFor();
  // A node started without --anonymous_publish lets no anonymous client publish.
  assert.match(await refused.textContent(), /permission_denied: not permitted to publish to /);
});

test("a page importing /client/fanout.js receives, survives a node restart behind its URL, reports the gap", async (t) => {
  let restartable = await startFanoutd();
  // The page's URL is a proxy's, so the new node need not win the old port.
  const proxy = await startProxy(restartable.ws);
  const wsAddress = proxy.address;
  let grpc = grpcClient(restartable.grpc);
  t.after(async () => {
    grpc.close();
    await proxy.close();
    await restartable.stop();
  });
  // Chromium logs every attempt that finds the node down.
  const page = await newPage(t, /^WebSocket connection to '.*' failed: /);
  // A page of another origin (the other node's) imports the library, as
  // another site's page would: this needs the library's CORS header.
  await page.goto(`http://${node.ws}/healthz`);
  const topic = uniqueTopic("browser");
  await page.evaluate(async ({ node, library, topic }) => {
    const { FanoutClient } = await import(`http://${library}/client/fanout.js`);
    const log = { messages: [], states: [], gaps: [], subscribed: 0, errors: [] };
    window.log = log;
    const client = new FanoutClient(`ws://${node}/ws`, { initialDelayMs: 50, maxDelayMs: 250 });
    client.on("state", (s) => log.states.push(s));
    client.on("gap", (g) => log.gaps.push(g));
    client.on("error", (e) => log.errors.push(`${e.code}: ${e.message}`));
    client.on("subscribed", (e) => e.topic === topic && log.subscribed++);
    client.subscribe(topic, ({ topic, seq, data }) =>
      log.messages.push({ topic, seq, data: data instanceof Uint8Array ? { bytes: [...data] } : data }));
    window.client = client;
  }, { node: wsAddress, library: node.ws, topic });
  const received = (n) => page.waitForFunction((n) => window.log.messages.length >= n, n);

  await page.waitForFunction(() => window.log.subscribed === 1);
  await grpc.publish(topic, '{"n":1}');
  await grpc.publish(topic, Buffer.from([0xde, 0xad, 0xbe, 0xef]));
  await received(2);

  proxy.setTarget(null);  // while no node is up, connections are dropped
  await restartable.stop();
  grpc.close();
  await page.waitForFunction(() => window.log.states.includes("reconnecting"));
  restartable = await startFanoutd();
  grpc = grpcClient(restartable.grpc);
  proxy.setTarget(restartable.ws);
  // Resubscribed by itself: nothing in the page did anything.
  await page.waitForFunction(() => window.log.subscribed === 2);
  assert.equal((await grpc.publish(topic, "after the restart")).subscribers, 1);
  await received(3);

  const log = await page.evaluate(() => window.log);
  assert.deepEqual(log.messages, [
    { topic, seq: 1, data: { n: 1 } },
    { topic, seq: 2, data: { bytes: [0xde, 0xad, 0xbe, 0xef] } },
    { topic, seq: 1, data: "after the restart" },
  ]);
  assert.deepEqual(log.gaps, [{ topic, expected: 3, got: 1 }]);
  // One "reconnecting" per attempt while the node was away.
  assert.deepEqual(log.states.slice(0, 3), ["connecting", "open", "reconnecting"]);
  assert.equal(log.states.at(-1), "open");
  assert.ok(log.states.slice(2, -1).every((s) => s === "reconnecting"), log.states.join(" "));
  assert.deepEqual(log.errors, []);
  await page.evaluate(() => window.client.close());
});

test("the README's browser snippet receives a published message", async (t) => {
  const readme = await readFile(path.join(ROOT, "README.md"), "utf8");
  const section = readme.split("\n## In a browser\n")[1];
  assert.ok(section, "README.md has a section '## In a browser'");
  const html = section.match(/```html\n([\s\S]*?)```/)?.[1];
  assert.ok(html, "the section has an html block");
  assert.ok(html.trim().split("\n").length < 10, "under ten lines");
  const script = html.match(/<script type="module">([\s\S]*)<\/script>/)[1]
    .replaceAll("127.0.0.1:8080", node.ws);

  const page = await newPage(t);
  await page.goto(`http://${node.ws}/healthz`);  // a page of a local origin
  // The snippet has no hook to say it is subscribed, but its topic is in the
  // URL, so it is once the WebSocket opens: have the page's class note that.
  await page.evaluate(() => {
    window.WebSocket = class extends window.WebSocket {
      constructor(...args) {
        super(...args);
        this.addEventListener("open", () => (window.opened = true));
      }
    };
  });
  const logged = page.waitForEvent("console", (m) => m.type() === "log");
  await page.addScriptTag({ type: "module", content: script });
  await page.waitForFunction(() => window.opened === true);
  assert.equal((await api.publish("news", '{"msg":"hello"}')).subscribers, 1);
  const args = await Promise.all((await logged).args().map((a) => a.jsonValue()));
  assert.deepEqual(args, ["news", 1, { msg: "hello" }]);
});

test("a page publishes: the promise gives the seq its subscription sees; a refused topic rejects with permission_denied", async (t) => {
  const page = await newPage(t);
  await page.goto(`http://${node.ws}/healthz`);
  const topic = uniqueTopic("pub");
  const result = await page.evaluate(async ({ node, topic }) => {
    const { FanoutClient } = await import(`http://${node}/client/fanout.js`);
    const client = new FanoutClient(`ws://${node}/ws`);
    const received = new Promise((resolve) => client.subscribe(topic, resolve));
    await new Promise((resolve) => client.on("subscribed", (e) => e.topic === topic && resolve()));
    const seq = await client.publish(topic, { from: "the page" });
    const message = await received;
    let refused;
    try {
      await client.publish("news", "not mine");
    } catch (e) {
      refused = { name: e.name, code: e.code, message: e.message };
    }
    client.close();
    return { seq, message, refused };
  }, { node: node.ws, topic });
  assert.equal(result.seq, 1);
  assert.deepEqual(result.message, { topic, seq: 1, data: { from: "the page" } });
  assert.deepEqual(result.refused, {
    name: "FanoutError", code: "permission_denied", message: "not permitted to publish to 'news'",
  });
});

test("/demo: topic chips do not repeat, and × removes one and its subscription", async (t) => {
  const served = await (await fetch(`http://${node.ws}/demo`)).text();
  if (served !== (await readFile(path.join(ROOT, "clients/js/demo.html"), "utf8"))) {
    t.skip("fanoutd embeds an older demo.html: rebuild fanoutd to test this one");
    return;
  }
  const page = await newPage(t);
  const topic = uniqueTopic("chip");
  await page.goto(`http://${node.ws}/demo`);
  await page.locator('#state[data-state="open"]').waitFor();
  await page.fill("#topic", `${topic}, ${topic}`);
  await page.click('#subscribe button[type="submit"]');
  await page.fill("#topic", topic);
  await page.click('#subscribe button[type="submit"]');
  const chip = page.locator(`#topics li[data-topic="${topic}"]`);
  await page.locator(`#topics li[data-topic="${topic}"][data-subscribed="true"]`).waitFor();
  assert.equal(await chip.count(), 1, "one chip per topic");
  assert.equal((await api.publish(topic, '"once"')).subscribers, 1);
  await page.locator(`#log tr.message[data-topic="${topic}"][data-seq="1"]`).waitFor();
  assert.equal(await page.locator(`#log tr.message[data-topic="${topic}"]`).count(), 1, "one row per message");

  await chip.locator("button.remove").click();
  await chip.waitFor({ state: "detached" });
  // The page's client is unsubscribed: wait until the node agrees.
  const deadline = Date.now() + TIMEOUT_MS;
  while ((await api.listSubscribers(topic)).subscribers.length > 0) {
    assert.ok(Date.now() < deadline, "the node still lists the page on the topic");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
});
