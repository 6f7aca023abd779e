// Drives VS Code (code-server) in headless Chromium the way a person would:
// keys, clicks, the mouse over a word. One step per run, one connection per
// step: a menu closes when the driver disconnects, so whatever a step opens
// it also uses (or reads) before it ends. tests/test_vscode_real.py runs the
// steps in order and checks what each returns.
//
//   node drive.mjs STEP '{"shot": "03-fix", ...}'
//
// Environment: GPO_DRIVE_BROWSER (Chromium's http://127.0.0.1:PORT devtools
// address), GPO_DRIVE_URL (code-server's URL with ?folder=), GPO_DRIVE_SHOTS
// (the screenshot folder), PUPPETEER_DIR (where puppeteer-core is installed).
// Prints one JSON line: {"ok": true, "shot": PATH, ...} or {"ok": false,
// "error": ..., "shot": PATH}; the log goes to stderr.
import { createRequire } from "node:module";
import * as path from "node:path";

const require = createRequire(path.join(process.env.PUPPETEER_DIR ?? ".", "package.json"));
const puppeteer = require("puppeteer-core");

const [step, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");
const shots = process.env.GPO_DRIVE_SHOTS ?? ".";
const workspaceUrl = process.env.GPO_DRIVE_URL ?? "";
const started = Date.now();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
function log(...parts) {
  const at = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  process.stderr.write(`[${step} ${at}s] ${parts.join(" ")}\n`);
}

// Waits for `probe` to return a truthy value.
async function until(what, probe, timeout = 30000, every = 100) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const found = await probe();
    if (found) {
      return found;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
    }
    await sleep(every);
  }
}

async function chord(page, mods, key) {
  for (const mod of mods) {
    await page.keyboard.down(mod);
  }
  await page.keyboard.press(key);
  for (const mod of [...mods].reverse()) {
    await page.keyboard.up(mod);
  }
}

async function quickInput(page, open, text) {
  await open();
  await page.waitForSelector(".quick-input-widget input", { visible: true, timeout: 10000 });
  await page.keyboard.type(text, { delay: 10 });
}

// ---- what the page shows (read in the page, spaces as spaces) ----------

// The lines of the active text editor (or of one side of the diff editor),
// top to bottom. Monaco renders spaces as U+00A0 and recycles line elements
// in any DOM order, so lines are sorted by their offset; the deleted lines
// an inline diff shows in a view zone are left out.
function editorLines(page, which = "active") {
  return page.evaluate((which) => {
    const roots = {
      active: ".editor-group-container.active .editor-instance .monaco-editor:not(.original-in-monaco-diff-editor):not(.modified-in-monaco-diff-editor)",
      original: ".monaco-diff-editor .editor.original",
      modified: ".monaco-diff-editor .editor.modified",
    };
    const root = document.querySelector(roots[which]);
    if (!root) {
      return null;
    }
    return [...root.querySelectorAll(".view-lines:not(.line-delete) > .view-line")]
      .map((line) => [parseFloat(line.style.top) || 0, line.textContent.replace(/\u00a0/g, " ")])
      .sort((a, b) => a[0] - b[0])
      .map(([, text]) => text);
  }, which);
}

function statusItem(page, id) {
  return page.evaluate((id) => {
    const item = document.getElementById(id);
    return item ? item.innerText.replace(/\s+/g, " ").trim() : null;
  }, id);
}

// The active tab: its name, its aria-label, and whether it is dirty.
function activeTab(page) {
  return page.evaluate(() => {
    const tab = document.querySelector(".editor-group-container.active .tab.active");
    return tab
      ? {
        // "capitals.prompt" (", preview" may follow), or "capitals.prompt ↔ ..." for a diff
        name: (tab.getAttribute("aria-label") ?? "").split(", ")[0],
        label: tab.getAttribute("aria-label") ?? "",
        dirty: tab.classList.contains("dirty"),
      }
      : null;
  });
}

function problemRows(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll(".markers-panel .monaco-list-row")]
      .map((row) => row.getAttribute("aria-label") ?? row.innerText),
  );
}

function visibleHover(page) {
  return page.evaluate(() => {
    const hover = [...document.querySelectorAll(".monaco-hover:not(.hidden)")]
      .find((h) => h.offsetParent !== null && h.innerText.trim() !== "");
    return hover ? hover.innerText : null;
  });
}

function actionRows(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll(".action-widget .monaco-list-row")].map((row) => ({
      title: (row.querySelector(".title") ?? row).textContent.trim(),
      header: row.classList.contains("group-header"),
      disabled: row.classList.contains("disabled") || row.getAttribute("aria-disabled") === "true",
    })),
  );
}

// ---- the steps -------------------------------------------------------------

// The row of the open action menu whose title starts with `title`.
async function actionRow(page, title) {
  for (const row of await page.$$(".action-widget .monaco-list-row.action")) {
    const text = await row.evaluate((r) => (r.querySelector(".title") ?? r).textContent.trim());
    if (text.startsWith(title)) {
      return { row, text };
    }
  }
  return null;
}

// Point at a menu row, then click it, as a person does. Pointing focuses the
// row and VS Code resolves its action then, re-rendering the row: a click
// whose press and release straddle that re-render is lost, so the click comes
// once the row has settled, and again if the menu is still open.
async function clickAction(page, title) {
  for (let attempt = 1; ; attempt++) {
    const found = await actionRow(page, title);
    if (!found) {
      throw new Error(`no "${title}" in the action menu`);
    }
    await found.row.hover();
    await sleep(500);
    const settled = await actionRow(page, title);
    if (!settled) {
      throw new Error(`"${title}" left the action menu`);
    }
    log(`clicking ${JSON.stringify(settled.text)}${attempt > 1 ? ` (again, ${attempt})` : ""}`);
    await settled.row.click();
    const closed = await until("the action menu to close",
      async () => (await actionRows(page)).length === 0, 2000).then(() => true, () => false);
    if (closed) {
      return;
    }
    if (attempt === 3) {
      throw new Error(`the action menu stays open after ${attempt} clicks on "${title}"`);
    }
  }
}

async function focusEditor(page) {
  await page.keyboard.press("Escape");
  await chord(page, ["Control"], "1");
}

async function goToLine(page, line) {
  await focusEditor(page);
  await quickInput(page, () => chord(page, ["Control"], "g"), String(line));
  await page.keyboard.press("Enter");
  await until(`the cursor on line ${line}`, async () =>
    (await statusItem(page, "status.editor.selection"))?.startsWith(`Ln ${line},`));
}

const steps = {
  // Load the workbench (once) and open a file with Quick Open (Ctrl+P).
  async open(page) {
    if (!page.url().startsWith(workspaceUrl)) {
      log("loading", workspaceUrl);
      await page.goto(workspaceUrl, { waitUntil: "domcontentloaded" });
    }
    await page.waitForSelector(".monaco-workbench .part.statusbar", { timeout: 60000 });
    await until("the explorer to list the workspace", () =>
      page.evaluate((name) => document.body.innerText.includes(name), args.file), 60000);
    await quickInput(page, () => chord(page, ["Control"], "p"), args.file);
    await until("Quick Open to find the file", () =>
      page.evaluate((name) => [...document.querySelectorAll(".quick-input-list .monaco-list-row")]
        .some((row) => (row.getAttribute("aria-label") ?? "").includes(name)), args.file));
    await page.keyboard.press("Enter");
    let last = null;
    const tab = await until("the file's tab", async () => {
      last = await activeTab(page);
      return last && last.name === args.file ? last : null;
    }).catch((error) => {
      throw new Error(`${error.message}; the active tab: ${JSON.stringify(last)}`);
    });
    const language = await until("the language mode in the status bar", () =>
      statusItem(page, "status.editor.mode"));
    return { tab, language, lines: await editorLines(page) };
  },

  // Click the tab named args.file (not a diff of it).
  async tab(page) {
    await page.keyboard.press("Escape");
    const tabs = await page.$$(".editor-group-container.active .tab");
    let clicked = false;
    for (const tab of tabs) {
      const name = await tab.evaluate((t) => (t.getAttribute("aria-label") ?? "").split(", ")[0]);
      if (name === args.file) {
        await tab.click();
        clicked = true;
        break;
      }
    }
    if (!clicked) {
      throw new Error(`no tab named ${args.file}`);
    }
    const tab = await until("the tab to be active", async () => {
      const t = await activeTab(page);
      return t && t.name === args.file && (await editorLines(page)) ? t : null;
    });
    return { tab, lines: await editorLines(page) };
  },

  // The Problems panel (Ctrl+Shift+M), once a row contains args.expect.
  async problems(page) {
    await chord(page, ["Control", "Shift"], "m");
    const rows = await until(`a problem with "${args.expect}"`, async () => {
      const found = await problemRows(page);
      return found.some((row) => row.includes(args.expect)) ? found : null;
    }, args.timeout ?? 60000);
    return { rows };
  },

  // Go to a line (Ctrl+G), press End and Backspace args.backspaces times;
  // then wait for the errors to leave the Problems panel and for the
  // auto-save.
  async fix(page) {
    await goToLine(page, args.line);
    await page.keyboard.press("End");
    for (let i = 0; i < args.backspaces; i++) {
      await page.keyboard.press("Backspace");
    }
    const rows = await until("no errors in the Problems panel", async () => {
      const found = await problemRows(page);
      return found.some((row) => row.startsWith("Error")) ? null : found;
    }, 60000);
    const tab = await until("the auto-save", async () => {
      const t = await activeTab(page);
      return t && !t.dirty ? t : null;
    }, 20000);
    return { rows, tab, lines: await editorLines(page) };
  },

  // Rest the mouse on the first word of the line starting with args.line
  // until the hover shows args.expect (moving away and back now and then:
  // VS Code asks again only on a new hover).
  async hover(page) {
    await page.keyboard.press("Escape");
    const deadline = Date.now() + (args.timeout ?? 60000);
    let text = null;
    for (;;) {
      const box = await page.evaluate((prefix) => {
        const line = [...document.querySelectorAll(
          ".editor-group-container.active .editor-instance .view-lines > .view-line")]
          .find((l) => l.textContent.replace(/\u00a0/g, " ").startsWith(prefix));
        const word = line?.querySelector("span > span");
        if (!word) {
          return null;
        }
        const r = word.getBoundingClientRect();
        return { x: r.x + Math.min(8, r.width / 2), y: r.y + r.height / 2 };
      }, args.line);
      if (!box) {
        throw new Error(`no line starting with "${args.line}" in the editor`);
      }
      await page.mouse.move(box.x + 300, box.y + 300);
      await sleep(200);
      await page.mouse.move(box.x, box.y, { steps: 4 });
      const shownBy = Date.now() + 4000;
      while (Date.now() < shownBy) {
        text = await visibleHover(page);
        if (text && text.includes(args.expect)) {
          await sleep(300); // let the fade-in end before the screenshot
          if (args.crop) {
            await shootEditor(page, args.shot);
          }
          return { text };
        }
        await sleep(150);
      }
      if (Date.now() > deadline) {
        throw new Error(`the hover never showed "${args.expect}"; last: ${JSON.stringify(text)}`);
      }
    }
  },

  // Ctrl+. on a line: read the action menu (until it lists args.expect) and
  // click args.choose if given. With args.progress, watch the status bar's
  // progress item from before the click until it has gone away.
  async actions(page) {
    const deadline = Date.now() + (args.timeout ?? 60000);
    let items = [];
    for (;;) {
      await goToLine(page, args.line);
      await chord(page, ["Control"], ".");
      items = await until("the action menu", async () => {
        const rows = await actionRows(page);
        return rows.length > 0 ? rows : null;
      }, 10000).catch(() => []);
      if (items.some((row) => !row.header && row.title.startsWith(args.expect))) {
        break;
      }
      log("menu without", JSON.stringify(args.expect), JSON.stringify(items));
      if (Date.now() > deadline) {
        throw new Error(`Ctrl+. never listed "${args.expect}"; last menu: ${JSON.stringify(items)}`);
      }
      await page.keyboard.press("Escape");
      await sleep(1000);
    }
    await sleep(300);
    await shoot(page, `${args.shot}-menu`);
    if (args.crop) {
      await shootEditor(page, `${args.shot}-menu`);
    }
    const result = { items };
    if (!args.choose) {
      await page.keyboard.press("Escape");
      return result;
    }
    const before = await editorLines(page);
    if (args.progress) {
      await page.evaluate(() => {
        // Every text the progress item shows, from now on, in order.
        const seen = (window.__gpoProgress = []);
        const record = () => {
          const item = document.getElementById("status.progress");
          const text = item ? item.innerText.replace(/\s+/g, " ").trim() : "";
          if (text && seen[seen.length - 1] !== text) {
            seen.push(text);
          }
        };
        new MutationObserver(record).observe(document.body, {
          subtree: true, childList: true, characterData: true, attributes: true,
        });
      });
    }
    await clickAction(page, args.choose);
    if (args.progress) {
      const first = await until("progress in the status bar", () =>
        page.evaluate(() => window.__gpoProgress[0] ?? null), 30000, 20);
      log("progress:", first);
      await shoot(page, `${args.shot}-progress`);
      await until("the progress to end", async () =>
        (await statusItem(page, "status.progress")) === null, args.timeout ?? 120000, 100);
      result.progress = await page.evaluate(() => window.__gpoProgress);
    }
    if (args.edits) {
      result.lines = await until("the edit in the editor", async () => {
        const now = await editorLines(page);
        return JSON.stringify(now) !== JSON.stringify(before) ? now : null;
      });
      result.tab = await activeTab(page);
    }
    return result;
  },

  // A command from the palette (F1), by its title.
  async command(page) {
    await focusEditor(page);
    await quickInput(page, () => page.keyboard.press("F1"), args.title);
    await until(`"${args.title}" first in the palette`, () =>
      page.evaluate((title) => {
        const row = document.querySelector(".quick-input-list .monaco-list-row.focused");
        return (row?.getAttribute("aria-label") ?? "").startsWith(title);
      }, args.title));
    await page.keyboard.press("Enter");
    const result = {};
    if (args.diff) {
      await page.waitForSelector(".monaco-diff-editor", { visible: true, timeout: 20000 });
      await until("both sides of the diff", async () =>
        (await editorLines(page, "original"))?.length && (await editorLines(page, "modified"))?.length);
      await sleep(500);
      result.tab = await activeTab(page);
      result.original = await editorLines(page, "original");
      result.modified = await editorLines(page, "modified");
      result.changes = await page.evaluate(() =>
        document.querySelectorAll(".monaco-diff-editor .line-insert, .monaco-diff-editor .line-delete").length);
    }
    return result;
  },

  // Save (Ctrl+S) and wait until the tab is no longer dirty.
  async save(page) {
    await focusEditor(page);
    await chord(page, ["Control"], "s");
    const tab = await until("the saved tab", async () => {
      const t = await activeTab(page);
      return t && !t.dirty ? t : null;
    }, 20000);
    return { tab, lines: await editorLines(page) };
  },
};

async function shoot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file });
  log("screenshot", file);
  return file;
}

// With args.crop, the editor area down to the end of the hover or menu over it
// (or of the text), for the docs.
async function shootEditor(page, name) {
  const clip = await page.evaluate(() => {
    const editor = document.querySelector(".part.editor").getBoundingClientRect();
    const below = [...document.querySelectorAll(
      ".monaco-hover:not(.hidden), .action-widget, .editor-group-container.active .view-line")]
      .filter((e) => e.offsetParent !== null)
      .map((e) => e.getBoundingClientRect().bottom);
    const bottom = Math.min(editor.bottom, Math.max(...below) + 16);
    return { x: editor.left, y: editor.top, width: editor.width, height: bottom - editor.top };
  });
  const file = path.join(shots, `${name}-editor.png`);
  await page.screenshot({ path: file, clip, captureBeyondViewport: false });
  log("screenshot", file);
  return file;
}

async function main() {
  const run = steps[step];
  if (!run) {
    throw new Error(`unknown step ${step}; steps: ${Object.keys(steps).join(", ")}`);
  }
  const browser = await puppeteer.connect({
    browserURL: process.env.GPO_DRIVE_BROWSER,
    defaultViewport: null,
  });
  let page;
  try {
    const pages = await browser.pages();
    page = pages.find((p) => workspaceUrl && p.url().startsWith(workspaceUrl)) ?? pages[0];
    log("args", JSON.stringify(args));
    let result;
    try {
      result = await run(page);
    } catch (error) {
      const shot = await shoot(page, `${args.shot ?? step}-failed`).catch(() => null);
      return { ok: false, error: String(error?.stack ?? error), shot };
    }
    const shot = await shoot(page, args.shot ?? step);
    return { ok: true, ...result, shot };
  } finally {
    await browser.disconnect();
  }
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(result.ok ? 0 : 1);
  },
  (error) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }) + "\n");
    process.exit(1);
  },
);
