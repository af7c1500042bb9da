// Drives wharf's web console (src/service/page.html) in Debian's Chromium, as a person would.
// tests/console.rs starts `wharf run` and runs this script once per case.
//
// Environment:
//   WHARF_URL          the service, e.g. http://127.0.0.1:8080 (required)
//   WHARF_TOKEN        service.token (may be empty)
//   WHARF_CASE         flow | badcreds | badmapping | twotabs (required)
//   WHARF_SHOTS        folder for screenshots (default ./shots)
//   WHARF_CHROMIUM     the browser (default /usr/bin/chromium)
//   WHARF_DUCKDB_PATH  flow: the demo DuckDB file
//   WHARF_DEST_SECRET  flow: the secret of destination `receiver` (must not be shown)
//   WHARF_ROWS         flow: the rows of the demo events table (the progress bar's total)
//   WHARF_TABLE        flow, badmapping: the demo events table (default: main.demo_events or
//                      main.events, whichever the warehouse lists)
//   WHARF_SECRET       badcreds: the password typed in (must never reach the page's HTML)
//   WHARF_SYNC         twotabs: the sync to edit in two tabs
//
// Exits 0 when the case passed; otherwise prints why and exits 1.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const WAIT = 60_000; // the longest any one wait may take
const env = (name, fallback) => process.env[name] ?? fallback;
const required = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};

class CaseFailed extends Error {}
function fail(message) {
  throw new CaseFailed(message);
}

const BASE = required("WHARF_URL").replace(/\/$/, "");
const TOKEN = env("WHARF_TOKEN", "");
const CASE = required("WHARF_CASE");
const SHOTS = env("WHARF_SHOTS", "shots");
const PAGE_URL = BASE + "/" + (TOKEN ? "#token=" + encodeURIComponent(TOKEN) : "");
const EVENTS = {
  event_name_column: "event_name",
  time_column: "event_time",
  user_id_column: "user_id",
  device_id_column: "device_id",
  properties_column: "properties",
  insert_time_column: "inserted_at",
};

mkdirSync(SHOTS, { recursive: true });
const pages = [];

async function shot(page, file) {
  await page.screenshot({ path: join(SHOTS, file), fullPage: true });
  console.log(`screenshot ${file}`);
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Waits until `f` (run in the page) returns a truthy value; fails with `what`. */
async function until(page, what, f, arg) {
  try {
    return await (await page.waitForFunction(f, arg, { timeout: WAIT, polling: 100 })).jsonValue();
  } catch (e) {
    fail(`${what} did not happen within ${WAIT / 1000}s`);
  }
}

/** Text of the first match of `selector` once it is non-empty. */
async function textOf(page, what, selector) {
  return until(page, what, (s) => {
    const e = document.querySelector(s);
    return e && e.textContent.trim();
  }, selector);
}

async function openConsole(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const tab = pages.length + 1;
  page.on("pageerror", (e) => console.log(`[page ${tab}] error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`[page ${tab}] console: ${m.text()}`);
  });
  pages.push(page);
  await page.goto(PAGE_URL);
  await until(page, "the page's first refresh", () => /updated/.test(document.getElementById("updated").textContent));
  const error = await page.locator("#error").textContent();
  if (error) fail(`the page shows an error on load: ${error}`);
  return page;
}

/** The wizard's first steps: warehouse `demo`, the demo events table; returns the table. */
async function eventsWizard(page) {
  await byTestId(page, "add-events").click();
  await until(page, "the events wizard", () => document.getElementById("wizard").dataset.state === "ready");
  await byTestId(page, "wiz-warehouse").selectOption("demo");
  const tables = await until(page, "the table list", () => {
    const s = document.querySelector('[data-testid="wiz-table"]');
    const names = [...s.options].map((o) => o.value).filter(Boolean);
    return names.length && names;
  });
  console.log(`tables of demo: ${tables.join(", ")}`);
  const wanted = env("WHARF_TABLE", "");
  const table = wanted || ["main.demo_events", "main.events"].find((t) => tables.includes(t));
  if (!table || !tables.includes(table)) fail(`the demo events table (${wanted || "main.demo_events or main.events"}) is not in the list: ${tables.join(", ")}`);
  await byTestId(page, "wiz-table").selectOption(table);
  await until(page, "the columns of " + table, () =>
    document.querySelectorAll('[data-testid="wiz-columns"] tr[data-column]').length > 0 &&
    !document.querySelector('[data-testid="create-run"]').disabled);
  const columns = await page.locator('[data-testid="wiz-columns"] tr[data-column]').evaluateAll((rows) =>
    rows.map((r) => r.dataset.column + " " + r.querySelector(".type").textContent));
  console.log(`columns: ${columns.join(", ")}`);
  return table;
}

/** Sets the mapping select `key` to `value` unless the suggestion already did; says which. */
async function ensureMapping(page, key, value) {
  const select = byTestId(page, "field-mapping." + key);
  const was = await select.inputValue();
  if (was === value) {
    console.log(`mapping.${key} prefilled: ${value}`);
  } else {
    await select.selectOption(value);
    console.log(`mapping.${key} adjusted: ${JSON.stringify(was)} -> ${value}`);
  }
}

const cases = {
  async flow(browser) {
    const duckdb = required("WHARF_DUCKDB_PATH");
    const page = await openConsole(await browser.newContext({ viewport: { width: 1400, height: 900 } }));

    // A DuckDB warehouse `demo`: tested, then saved.
    await byTestId(page, "nav-warehouses").click();
    await byTestId(page, "add-warehouse").click();
    await byTestId(page, "wh-name").fill("demo");
    await byTestId(page, "wh-type").selectOption("duckdb");
    await byTestId(page, "wh-field-path").fill(duckdb);
    await byTestId(page, "test-connection").click();
    const tested = await until(page, "a connection test result", () => {
      const r = document.querySelector('[data-testid="test-result"]');
      return r.dataset.ok && { ok: r.dataset.ok, text: r.textContent };
    });
    if (tested.ok !== "true") fail(`the connection test failed: ${tested.text}`);
    console.log(`test connection: ${tested.text}`);
    await shot(page, "01-warehouse.png");
    await byTestId(page, "save-warehouse").click();
    await byTestId(page, "wh-row-demo").waitFor({ timeout: WAIT });
    await shot(page, "02-warehouse-saved.png");

    // The destination `receiver` of the config is listed, its secret not shown.
    const destSecret = env("WHARF_DEST_SECRET", "");
    const leaks = [];
    if (destSecret) page.on("response", async (r) => {
      if ((await r.text().catch(() => "")).includes(destSecret)) leaks.push(`${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    await byTestId(page, "nav-destinations").click();
    await byTestId(page, "dest-row-receiver").waitFor({ timeout: WAIT });
    await shot(page, "03-destinations.png");
    if (destSecret && (await page.content()).includes(destSecret)) fail("the page shows the destination's secret");
    if (leaks.length) fail(`API answers hold the destination's secret: ${leaks.join(", ")}`);

    // + Events: the demo table, its mapping prefilled (adjusted where it was not).
    const table = await eventsWizard(page);
    for (const [key, value] of Object.entries(EVENTS)) await ensureMapping(page, key, value);
    const modes = await byTestId(page, "field-mode").locator("option").evaluateAll((os) => os.map((o) => o.value));
    if (!modes.includes("append")) fail(`append is not among the modes offered for ${table}: ${modes}`);
    await byTestId(page, "field-mode").selectOption("append");
    await byTestId(page, "field-schedule").selectOption("manual");
    await byTestId(page, "wiz-dest-receiver").check();
    await byTestId(page, "field-name").fill("demo_events");
    await shot(page, "04-mapping.png");

    // Preview: records exactly as they would be sent.
    await byTestId(page, "preview").click();
    const count = await until(page, "the preview", () => {
      const pre = document.querySelector('[data-testid="preview-records"]');
      const error = document.querySelector('[data-testid="wizard-error"]').textContent ||
        [...document.querySelectorAll("#wizard .field-error")].map((e) => e.textContent).join("");
      if (error) return { error };
      return pre && { count: Number(pre.dataset.count) };
    });
    if (count.error) fail(`the preview was refused: ${count.error}`);
    if (!(count.count >= 1)) fail("the preview shows no record");
    const first = JSON.parse(await byTestId(page, "preview-records").textContent())[0];
    console.log(`preview: ${count.count} records; the first: ${JSON.stringify(first)}`);
    await shot(page, "05-preview.png");

    // Create & run: the syncs view shows it running, then its succeeded run.
    await byTestId(page, "create-run").click();
    await page.locator('tr[data-sync="demo_events"]').waitFor({ timeout: WAIT });
    await shot(page, "06-created.png");
    // While it runs, its progress bar (rows of a known total, rows/s, ETA); once it has
    // succeeded, the run's progress as it ended: every row, 100%.
    const last = await until(page, "a finished run of demo_events", () => {
      const row = document.querySelector('tr[data-sync="demo_events"]');
      if (!row) return null;
      const bar = row.querySelector("progress");
      const text = row.querySelector(".progress")?.textContent || "";
      if (bar && bar.dataset.running === "true") {
        window.__running = window.__running || [];
        window.__running.push({ value: bar.value, max: bar.max, text });
      }
      const status = row.querySelector(".last-status").textContent;
      if (!/SUCCEEDED|FAILED|CANCELLED/.test(status)) return null;
      if (/SUCCEEDED/.test(status) && !(bar && bar.dataset.running === "false")) return null;
      return { status, row: row.innerText, running: window.__running || [],
        end: bar && { value: bar.value, max: bar.max, text } };
    });
    if (!/SUCCEEDED/.test(last.status)) fail(`the run did not succeed: ${last.row}`);
    const total = Number(env("WHARF_ROWS", "0"));
    const partial = last.running.filter((p) => p.max === total && p.value < total && / rows\/s, ETA /.test(p.text));
    if (!partial.length) fail(`no progress bar of ${total} rows with rows/s and ETA was seen while the run went: ${JSON.stringify(last.running)}`);
    if (!(last.end.max === total && last.end.value === total && last.end.text.startsWith("100% "))) {
      fail(`the finished run's progress is not 100% of ${total} rows: ${JSON.stringify(last.end)}`);
    }
    console.log(`progress while running: ${[...new Set(partial.map((p) => p.text))].join(" | ")}`);
    console.log(`last run: ${last.status}; progress at its end: ${last.end.text}`);
    await shot(page, "07-succeeded.png");

    // Its history.
    await page.locator('tr[data-sync="demo_events"] td').first().click();
    const history = byTestId(page, "history-demo_events");
    await history.waitFor({ timeout: WAIT });
    await until(page, "the run in the history", () =>
      /SUCCEEDED/.test(document.querySelector('[data-testid="history-demo_events"]').textContent));
    console.log(`history: ${(await history.locator("tbody tr").first().innerText()).replace(/\s+/g, " ")}`);
    await shot(page, "08-history.png");
  },

  async badcreds(browser) {
    const secret = required("WHARF_SECRET");
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await openConsole(context);
    const leaks = [];
    page.on("response", async (r) => {
      const body = await r.text().catch(() => "");
      if (body.includes(secret)) leaks.push(`${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    await byTestId(page, "nav-warehouses").click();
    await byTestId(page, "add-warehouse").click();
    await byTestId(page, "wh-name").fill("badpg");
    await byTestId(page, "wh-type").selectOption("postgres");
    await byTestId(page, "wh-field-host").fill("127.0.0.1");
    await byTestId(page, "wh-field-port").fill("5432");
    await byTestId(page, "wh-field-user").fill("wharf_password");  // a role whose password the server checks
    await byTestId(page, "wh-field-password").fill(secret);
    await byTestId(page, "wh-field-database").fill("test");
    await byTestId(page, "test-connection").click();
    const tested = await until(page, "a connection test result", () => {
      const r = document.querySelector('[data-testid="test-result"]');
      const top = document.querySelector('[data-testid="wh-form-error"]').textContent;
      if (top) return { ok: "error", text: top };
      return r.dataset.ok && { ok: r.dataset.ok, text: r.textContent };
    });
    if (tested.ok === "true") fail(`the connection test passed with a wrong password: ${tested.text}`);
    await shot(page, "01-badcreds.png");
    const html = await page.content();
    if (html.includes(secret)) fail("the page's HTML holds the password");
    if (tested.text.includes(secret)) fail("the error shown holds the password");
    if (leaks.length) fail(`answers holding the password: ${leaks.join(", ")}`);
    console.log(`error shown: ${tested.text}`);
  },

  async badmapping(browser) {
    const page = await openConsole(await browser.newContext({ viewport: { width: 1400, height: 900 } }));
    await eventsWizard(page);
    // A time column that is no time: the user id.
    await byTestId(page, "field-mapping.time_column").selectOption("user_id");
    await byTestId(page, "wiz-dest-receiver").check();
    await byTestId(page, "field-name").fill("bad_mapping");
    await byTestId(page, "create-run").click();
    const shown = await until(page, "an error", () => {
      const field = document.querySelector('[data-error-for="mapping.time_column"]').textContent;
      const top = document.querySelector('[data-testid="wizard-error"]').textContent;
      const others = [...document.querySelectorAll("#wizard [data-error-for]")]
        .filter((e) => e.textContent).map((e) => `${e.dataset.errorFor}: ${e.textContent}`);
      return (field || top || others.length) && { field, top, others };
    });
    await shot(page, "01-badmapping.png");
    if (!shown.field) fail(`the error is not next to the time column (top: ${JSON.stringify(shown.top)}, fields: ${JSON.stringify(shown.others)})`);
    const view = await page.locator('section[data-view="wizard"]').isVisible();
    if (!view) fail("the wizard closed although the sync was refused");
    console.log(`refused: ${shown.field}`);
  },

  async twotabs(browser) {
    const sync = required("WHARF_SYNC");
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const tabs = [await openConsole(context), await openConsole(context)];
    for (const tab of tabs) {
      await byTestId(tab, "edit-" + sync).click();
      await until(tab, `the edit form of ${sync}`, () =>
        document.getElementById("wizard").dataset.state === "ready" &&
        document.querySelector('[data-testid="save-sync"]') &&
        !document.querySelector('[data-testid="save-sync"]').disabled);
    }
    const [one, two] = tabs;
    await byTestId(one, "field-schedule").selectOption("daily");
    const saved = one.waitForResponse((r) => r.request().method() === "PUT" && r.url().endsWith(`/syncs/${sync}/config`), { timeout: WAIT });
    await byTestId(one, "save-sync").click();
    const first = await saved;
    if (first.status() !== 200) fail(`tab 1's save was answered ${first.status()}: ${await first.text()}`);
    await until(one, "tab 1 back on the syncs view", () => !document.querySelector('section[data-view="syncs"]').hidden);
    await shot(one, "01-tab1-saved.png");

    await byTestId(two, "field-schedule").selectOption("hourly");
    const refused = two.waitForResponse((r) => r.request().method() === "PUT" && r.url().endsWith(`/syncs/${sync}/config`), { timeout: WAIT });
    await byTestId(two, "save-sync").click();
    const second = await refused;
    if (second.status() !== 409) fail(`tab 2's stale save was answered ${second.status()}, not 409: ${await second.text()}`);
    const message = await textOf(two, "the conflict message in tab 2", '[data-testid="wizard-error"]');
    await shot(two, "02-tab2-conflict.png");
    if (!/changed/i.test(message)) fail(`tab 2 shows ${JSON.stringify(message)}, not the conflict`);
    console.log(`conflict: ${message}`);
  },
};

async function main() {
  const run = cases[CASE];
  if (!run) fail(`WHARF_CASE=${CASE}: not one of ${Object.keys(cases).join(", ")}`);
  const browser = await chromium.launch({
    executablePath: env("WHARF_CHROMIUM", "/usr/bin/chromium"),
    args: ["--no-sandbox", "--headless=new"],
    timeout: WAIT,
  });
  try {
    await run(browser);
  } catch (e) {
    for (const [i, page] of pages.entries()) await shot(page, `failure-${i + 1}.png`).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

try {
  await main();
  console.log(`case ${CASE}: passed`);
} catch (e) {
  process.exitCode = 1;
  console.error(`case ${CASE}: FAILED: ${e instanceof CaseFailed ? e.message : e.stack || e}`);
}
