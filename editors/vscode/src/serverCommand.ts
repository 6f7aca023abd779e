// Which `gpo` to start: the gpo.server.path setting, then the active Python
// environment's gpo, then gpo on PATH. Pure (no `vscode` import) so it is
// tested with node's test runner; the file system and environment come in as
// arguments.
import * as path from "path";

export type Platform = "win32" | "darwin" | "linux" | string;

export interface ResolveInput {
  /** gpo.server.path, possibly "" or with a leading "~". */
  configuredPath: string;
  /** The active Python environment's interpreter, if the Python extension gave one. */
  interpreter?: string;
  /** The PATH environment variable. */
  pathEnv: string;
  platform: Platform;
  home: string;
  /** True when `file` exists and is a file we may run. */
  isExecutable: (file: string) => boolean;
}

export type ServerSource = "setting" | "python" | "path";

export type Resolved =
  | { ok: true; command: string; args: string[]; source: ServerSource }
  | { ok: false; message: string };

const LSP_ARGS = ["lsp"];

function pathApi(platform: Platform): path.PlatformPath {
  return platform === "win32" ? path.win32 : path.posix;
}

export function expandHome(file: string, home: string, platform: Platform): string {
  if (file === "~") {
    return home;
  }
  if (file.startsWith("~/") || (platform === "win32" && file.startsWith("~\\"))) {
    return pathApi(platform).join(home, file.slice(2));
  }
  return file;
}

function executableNames(platform: Platform): string[] {
  // On Windows pip writes gpo.exe into Scripts\; elsewhere a plain `gpo` script.
  return platform === "win32" ? ["gpo.exe", "gpo.cmd", "gpo.bat", "gpo"] : ["gpo"];
}

/** Where pip puts console scripts for the environment of `interpreter`. */
export function environmentCandidates(interpreter: string, platform: Platform): string[] {
  const p = pathApi(platform);
  const dir = p.dirname(interpreter);
  const names = executableNames(platform);
  const dirs = [dir];
  if (platform === "win32") {
    // A conda or system Python has python.exe in the root and scripts in Scripts\.
    dirs.push(p.join(dir, "Scripts"));
  }
  return dirs.flatMap((d) => names.map((n) => p.join(d, n)));
}

export function pathCandidates(pathEnv: string, platform: Platform): string[] {
  const p = pathApi(platform);
  const separator = platform === "win32" ? ";" : ":";
  const names = executableNames(platform);
  return pathEnv
    .split(separator)
    .filter((d) => d.length > 0)
    .flatMap((d) => names.map((n) => p.join(d, n)));
}

export function resolveServerCommand(input: ResolveInput): Resolved {
  const configured = input.configuredPath.trim();
  if (configured) {
    const file = expandHome(configured, input.home, input.platform);
    if (!input.isExecutable(file)) {
      return {
        ok: false,
        message: `gpo.server.path is set to "${configured}", but no executable is there.`,
      };
    }
    return { ok: true, command: file, args: LSP_ARGS, source: "setting" };
  }
  if (input.interpreter) {
    const found = environmentCandidates(input.interpreter, input.platform).find(input.isExecutable);
    if (found) {
      return { ok: true, command: found, args: LSP_ARGS, source: "python" };
    }
  }
  const onPath = pathCandidates(input.pathEnv, input.platform).find(input.isExecutable);
  if (onPath) {
    return { ok: true, command: onPath, args: LSP_ARGS, source: "path" };
  }
  const where = input.interpreter ? ` or next to ${input.interpreter}` : "";
  return {
    ok: false,
    message:
      `Cannot find the gpo language server: no gpo on PATH${where}. ` +
      "Install it from a clone of the gpo repository with " +
      "`pip install /path/to/gpo` in your Python environment (or `pipx install /path/to/gpo`), " +
      "or set gpo.server.path.",
  };
}
