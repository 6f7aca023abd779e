// The `gpo` settings object the language server receives, both as
// initializationOptions and as the answer to workspace/configuration for the
// section "gpo". Empty strings in the VS Code settings mean "the file
// decides" and are sent as null; unset budget fields are left out.

export interface GpoSettings {
  autoOptimizeOnSave: boolean;
  models: { task: string | null; optimizer: string | null };
  daemon: { address: string | null };
  budget: { initial?: number; final?: number; decay?: string };
}

/** Reads one setting below "gpo." (e.g. "models.task"), undefined when unset. */
export type Getter = (key: string) => unknown;

const DECAYS = new Set(["cosine", "linear", "fixed"]);

function text(value: unknown): string | null {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : null;
}

function words(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 ? value : undefined;
}

export function readSettings(get: Getter): GpoSettings {
  const budget: GpoSettings["budget"] = {};
  const initial = words(get("budget.initial"));
  const final = words(get("budget.final"));
  const decay = text(get("budget.decay"));
  if (initial !== undefined) {
    budget.initial = initial;
  }
  if (final !== undefined) {
    budget.final = final;
  }
  if (decay !== null && DECAYS.has(decay)) {
    budget.decay = decay;
  }
  return {
    autoOptimizeOnSave: get("autoOptimizeOnSave") === true,
    models: { task: text(get("models.task")), optimizer: text(get("models.optimizer")) },
    daemon: { address: text(get("daemon.address")) },
    budget,
  };
}

export interface ConfigurationItem {
  section?: string;
  scopeUri?: string;
}

/**
 * Answers a workspace/configuration request: the settings object for "gpo",
 * the matching part for a dotted subsection ("gpo.models"), null for other
 * sections (they are not ours to answer).
 */
export function configurationResult(
  items: ConfigurationItem[],
  settingsFor: (scopeUri: string | undefined) => GpoSettings,
): unknown[] {
  return items.map((item) => {
    const section = item.section ?? "";
    if (section !== "gpo" && !section.startsWith("gpo.")) {
      return null;
    }
    let value: unknown = settingsFor(item.scopeUri);
    for (const part of section.split(".").slice(1)) {
      if (value === null || typeof value !== "object" || !(part in value)) {
        return null;
      }
      value = (value as Record<string, unknown>)[part];
    }
    return value;
  });
}

/** True when a settings change means the server process must be started anew. */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return affects("gpo.server.path");
}
