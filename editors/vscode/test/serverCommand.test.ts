import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ResolveInput,
  environmentCandidates,
  expandHome,
  pathCandidates,
  resolveServerCommand,
} from "../src/serverCommand";

function input(files: string[], overrides: Partial<ResolveInput> = {}): ResolveInput {
  const present = new Set(files);
  return {
    configuredPath: "",
    pathEnv: "/usr/local/bin:/usr/bin",
    platform: "linux",
    home: "/home/u",
    isExecutable: (file) => present.has(file),
    ...overrides,
  };
}

test("the setting wins over the Python environment and PATH", () => {
  const result = resolveServerCommand(
    input(["/opt/gpo/bin/gpo", "/venv/bin/gpo", "/usr/bin/gpo"], {
      configuredPath: "/opt/gpo/bin/gpo",
      interpreter: "/venv/bin/python",
    }),
  );
  assert.deepEqual(result, {
    ok: true,
    command: "/opt/gpo/bin/gpo",
    args: ["lsp"],
    source: "setting",
  });
});

test("a setting pointing nowhere is an error naming the setting, not a silent fallback", () => {
  const result = resolveServerCommand(
    input(["/usr/bin/gpo"], { configuredPath: "~/missing/gpo" }),
  );
  assert.equal(result.ok, false);
  assert.match(!result.ok ? result.message : "", /gpo\.server\.path is set to "~\/missing\/gpo"/);
});

test("a setting with ~ is expanded", () => {
  const result = resolveServerCommand(
    input(["/home/u/.local/bin/gpo"], { configuredPath: " ~/.local/bin/gpo " }),
  );
  assert.ok(result.ok && result.command === "/home/u/.local/bin/gpo");
});

test("the active Python environment's gpo comes before PATH", () => {
  const result = resolveServerCommand(
    input(["/venv/bin/gpo", "/usr/bin/gpo"], { interpreter: "/venv/bin/python3" }),
  );
  assert.ok(result.ok);
  assert.equal(result.ok && result.command, "/venv/bin/gpo");
  assert.equal(result.ok && result.source, "python");
});

test("PATH is searched in order when the environment has no gpo", () => {
  const result = resolveServerCommand(
    input(["/usr/bin/gpo", "/usr/local/bin/gpo"], { interpreter: "/venv/bin/python" }),
  );
  assert.ok(result.ok && result.command === "/usr/local/bin/gpo" && result.source === "path");
});

test("nothing found explains how to install", () => {
  const result = resolveServerCommand(input([], { interpreter: "/venv/bin/python" }));
  assert.equal(result.ok, false);
  const message = !result.ok ? result.message : "";
  assert.match(message, /next to \/venv\/bin\/python/);
  // A command that works from a clone: no package index serves gpo.
  assert.match(message, /pip install \/path\/to\/gpo/);
  assert.match(message, /pipx install \/path\/to\/gpo/);
  assert.doesNotMatch(message, /gpo-lsp/);
});

test("Windows: Scripts folder, .exe names and ; separated PATH", () => {
  assert.deepEqual(environmentCandidates("C:\\conda\\python.exe", "win32").slice(4, 5), [
    "C:\\conda\\Scripts\\gpo.exe",
  ]);
  assert.deepEqual(pathCandidates("C:\\a;;C:\\b", "win32").filter((p) => p.endsWith(".exe")), [
    "C:\\a\\gpo.exe",
    "C:\\b\\gpo.exe",
  ]);
  const result = resolveServerCommand(
    input(["C:\\venv\\Scripts\\gpo.exe"], {
      platform: "win32",
      interpreter: "C:\\venv\\Scripts\\python.exe",
      pathEnv: "",
      home: "C:\\Users\\u",
    }),
  );
  assert.ok(result.ok && result.command === "C:\\venv\\Scripts\\gpo.exe");
});

test("expandHome leaves other paths alone", () => {
  assert.equal(expandHome("~", "/h", "linux"), "/h");
  assert.equal(expandHome("/x/~/y", "/h", "linux"), "/x/~/y");
  assert.equal(expandHome("~\\bin\\gpo.exe", "C:\\h", "win32"), "C:\\h\\bin\\gpo.exe");
});
