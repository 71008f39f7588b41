// Drives docgate's own pages in Debian's Chromium (through playwright-core, which downloads
// nothing): one JSON file in (what to do), one JSON line out (what was seen). A failing step
// says which one it was and leaves a screenshot beside the others.
//
// usage: node browser_e2e.mjs plan.json
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(plan.out_dir, { recursive: true });

const VIEWPORTS = {
  desktop: { viewport: { width: 1280, height: 900 } },
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
};

let step = "launch";
const results = [];

async function shot(page, name) {
  await page.screenshot({ path: join(plan.out_dir, `${name}.png`), fullPage: true });
}

async function uploadScenario(browser, sc) {
  const context = await browser.newContext(VIEWPORTS[sc.viewport || "desktop"]);
  const page = await context.newPage();
  const seen = { patches: 0, aborted: 0, heads: 0 };
  page.on("request", (r) => {
    if (r.method() === "PATCH") seen.patches += 1;
    if (r.method() === "HEAD") seen.heads += 1;
  });
  if (sc.cut_after_patches) {
    // The network drops while the document is on its way: the n-th PATCH never arrives.
    let patches = 0;
    await page.route("**/v1/tus/**", async (route) => {
      if (route.request().method() === "PATCH") {
        patches += 1;
        if (patches === sc.cut_after_patches + 1) {
          seen.aborted += 1;
          return route.abort("internetdisconnected");
        }
      }
      return route.continue();
    });
  }
  const name = `${sc.name}-${sc.viewport || "desktop"}`;
  try {
    step = `${name}: open the page`;
    await page.goto(plan.base + "/");
    step = `${name}: start a sandbox session`;
    await page.selectOption("#start-provider", sc.provider);
    for (const slot of sc.slots || []) await page.check(`#slot-${slot}`);
    await page.click("#start-form button");
    await page.waitForSelector("#session:not([hidden])", { timeout: 15000 });
    step = `${name}: fill in the fields`;
    for (const [field, value] of Object.entries(sc.fields || {})) {
      const input = page.locator(`#field-${field}`);
      if (await input.count()) await input.fill(value);
    }
    step = `${name}: choose the files`;
    for (const [slot, path] of Object.entries(sc.files)) {
      await page.setInputFiles(`#file-${slot}`, path);
    }
    await shot(page, `${name}-ready`);
    step = `${name}: upload`;
    await page.click("#send");
    if (sc.expect_refusal) {
      step = `${name}: see the refusal`;
      const error = page.locator(".slot .error").first();
      await error.filter({ hasText: /\S/ }).waitFor({ timeout: 15000 });
      const text = await error.textContent();
      await shot(page, `${name}-refused`);
      results.push({ name, refusal: text, patches: seen.patches });
      return;
    }
    // The provider may ask for more details once it sees the first ones (Finext's address
    // fields after `kind`): fill in what it asks for and send again.
    for (let round = 1; ; round += 1) {
      step = `${name}: wait for the receipt (round ${round})`;
      await page.waitForSelector("#receipt:not([hidden]), #notice.error", { timeout: 180000 });
      if (await page.isVisible("#receipt")) break;
      const asked = await page.$$eval("#field-list input", (els) => els.filter((e) => !e.value).map((e) => e.name));
      const known = asked.filter((f) => sc.fields && f in sc.fields);
      if (round > 3 || known.length === 0) throw new Error(`the page says: ${await page.textContent("#notice")}`);
      step = `${name}: answer the fields asked for (${known.join(", ")})`;
      for (const f of known) await page.fill(`#field-${f}`, sc.fields[f]);
      await page.evaluate(() => { document.getElementById("notice").className = ""; });
      await page.click("#send");
    }
    step = `${name}: wait for "delivered"`;
    await page.waitForSelector('#receipt-status[data-status="delivered"]', { timeout: 180000 });
    const sha256 = await page.$$eval("dd[data-sha256]", (els) => els.map((e) => e.dataset.sha256));
    await shot(page, `${name}-delivered`);
    results.push({ name, status: "delivered", sha256, ...seen });
  } catch (e) {
    await shot(page, `${name}-failed`).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

// The console: find the upload that failed, retry it until delivered, then erase it.
async function consoleScenario(browser, sc) {
  const context = await browser.newContext(VIEWPORTS[sc.viewport || "desktop"]);
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  const name = `${sc.name}-${sc.viewport || "desktop"}`;
  try {
    step = `${name}: open the console`;
    await page.goto(plan.base + "/console");
    step = `${name}: connect with the API key`;
    await page.fill("#api-key", sc.key);
    await page.click("#key-form button");
    await page.waitForSelector("#board:not([hidden])", { timeout: 15000 });
    step = `${name}: filter on status ${sc.status}`;
    await page.selectOption("#f-status", sc.status);
    await page.click("#filters button");
    await page.waitForSelector(`button[data-upload="${sc.upload}"]`, { timeout: 15000 });
    const listed = await page.$$eval("#rows tr", (rows) => rows.length);
    await shot(page, `${name}-listed`);
    step = `${name}: open the upload`;
    await page.click(`button[data-upload="${sc.upload}"]`);
    await page.waitForSelector(`#d-status[data-status="${sc.status}"]`, { timeout: 15000 });
    step = `${name}: retry until delivered`;
    await page.click("#retry");
    await page.waitForSelector('#d-status[data-status="delivered"]', { timeout: 60000 });
    const history = await page.$$eval("#events tr td:nth-child(2)", (tds) => tds.map((t) => t.textContent));
    await shot(page, `${name}-delivered`);
    step = `${name}: erase`;
    await page.click("#erase");
    await page.locator("#d-fields dt", { hasText: "Erased" }).waitFor({ timeout: 15000 });
    await shot(page, `${name}-erased`);
    results.push({ name, listed, history, erased: true });
  } catch (e) {
    await shot(page, `${name}-failed`).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

// A session link from the tenant's backend (`/#session=…&token=…`): the page opens the
// session, takes the token out of the address (and so out of the history), and a reload of
// the tab still finds the session.
async function linkScenario(browser, sc) {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const name = sc.name;
  try {
    step = `${name}: open the link`;
    await page.goto(`${plan.base}/#session=${encodeURIComponent(sc.session)}&token=${encodeURIComponent(sc.token)}`);
    await page.waitForSelector("#session:not([hidden])", { timeout: 15000 });
    const address = page.url();
    step = `${name}: reload the tab`;
    await page.reload();
    await page.waitForSelector("#session:not([hidden])", { timeout: 15000 });
    await shot(page, `${name}-reloaded`);
    results.push({ name, address, reopened: true });
  } catch (e) {
    await shot(page, `${name}-failed`).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

// The Uppy example, served from its own origin (requests to it are answered from the
// example's directory), uploading to a session minted by the test.
async function uppyScenario(browser, sc) {
  // A real HTTP server on loopback for the example's files, so the page and the gateway
  // are both local to Chromium (as a team's dev server would be).
  const types = { html: "text/html", js: "text/javascript", css: "text/css" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname.replace(/^\/+/, "") || "index.html";
    if (path.includes("..")) { res.writeHead(404); return res.end(); }
    try {
      const body = readFileSync(join(sc.dir, path));
      res.writeHead(200, { "Content-Type": types[path.split(".").pop()] || "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end("not found");
    }
  });
  await new Promise((ok) => server.listen(sc.port, "127.0.0.1", ok));
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  context.on("close", () => server.close());
  const name = sc.name;
  const trouble = [];
  page.on("requestfailed", (r) => trouble.push(`${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`));
  page.on("console", (m) => { if (m.type() === "error") trouble.push(`console: ${m.text()}`); });
  try {
    step = `${name}: open the Uppy example`;
    await page.goto(sc.page);
    await page.waitForSelector(".uppy-Dashboard", { timeout: 15000 });
    step = `${name}: add the file`;
    await page.setInputFiles(".uppy-Dashboard-input >> nth=0", sc.file);
    await shot(page, `${name}-ready`);
    step = `${name}: upload`;
    await page.click(".uppy-StatusBar-actionBtn--upload");
    await page.waitForSelector("#result[data-successful]", { timeout: 120000 });
    const successful = await page.getAttribute("#result", "data-successful");
    await shot(page, `${name}-done`);
    if (successful !== "1") throw new Error(`Uppy says: ${await page.textContent("#result")} (${trouble.join("; ")})`);
    results.push({ name, successful: 1 });
  } catch (e) {
    await shot(page, `${name}-failed`).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

const browser = await chromium.launch({ executablePath: plan.chromium, args: ["--no-sandbox"] });
try {
  for (const sc of plan.scenarios) {
    if (sc.console) await consoleScenario(browser, sc);
    else if (sc.uppy) await uppyScenario(browser, sc);
    else if (sc.link) await linkScenario(browser, sc);
    else await uploadScenario(browser, sc);
  }
  console.log(JSON.stringify({ ok: true, results }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, step, error: String(e && e.message ? e.message : e), results }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
