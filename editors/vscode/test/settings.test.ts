import assert from "node:assert/strict";
import { test } from "node:test";

import { GpoSettings, configurationResult, needsRestart, readSettings } from "../src/settings";

function getter(values: Record<string, unknown>) {
  return (key: string) => values[key];
}

test("defaults: auto-optimize off, the file decides everything else", () => {
  assert.deepEqual(readSettings(getter({ autoOptimizeOnSave: false, "budget.decay": "" })), {
    autoOptimizeOnSave: false,
    models: { task: null, optimizer: null },
    daemon: { address: null },
    budget: {},
  });
});

test("set values are passed, trimmed; bad budget values are dropped", () => {
  const settings = readSettings(
    getter({
      autoOptimizeOnSave: true,
      "models.task": " openai/gpt-4o-mini ",
      "models.optimizer": "openai/gpt-4o",
      "daemon.address": "/run/user/1000/gpo/daemon.sock",
      "budget.initial": 40,
      "budget.final": 2.5,
      "budget.decay": "linear",
    }),
  );
  assert.deepEqual(settings, {
    autoOptimizeOnSave: true,
    models: { task: "openai/gpt-4o-mini", optimizer: "openai/gpt-4o" },
    daemon: { address: "/run/user/1000/gpo/daemon.sock" },
    budget: { initial: 40, decay: "linear" },
  });
  assert.deepEqual(readSettings(getter({ "budget.decay": "exp", "budget.initial": -1 })).budget, {});
});

test("workspace/configuration: section gpo, subsections, and foreign sections", () => {
  const settings: GpoSettings = readSettings(getter({ "models.task": "m", "budget.final": 5 }));
  const scopes: Array<string | undefined> = [];
  const result = configurationResult(
    [
      { section: "gpo", scopeUri: "file:///w/a.prompt" },
      { section: "gpo.models" },
      { section: "gpo.budget.final" },
      { section: "gpo.nothing" },
      { section: "python" },
      {},
    ],
    (scope) => {
      scopes.push(scope);
      return settings;
    },
  );
  assert.deepEqual(result, [settings, { task: "m", optimizer: null }, 5, null, null, null]);
  assert.equal(scopes[0], "file:///w/a.prompt");
});

test("only a new server path restarts the server", () => {
  assert.equal(needsRestart((s) => s === "gpo.server.path"), true);
  assert.equal(needsRestart((s) => s === "gpo.models.task"), false);
});
