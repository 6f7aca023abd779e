// VS Code glue: starts `gpo lsp` over stdio with vscode-languageclient and
// wires the commands. The decisions (which gpo, which settings, which URI)
// live in the pure modules beside this one, which have unit tests.
import * as fs from "fs";
import * as os from "os";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

import { SCHEME, SUGGESTION_REQUEST, diffTitle, isSuggestionAnswer, suggestionUri } from "./preview";
import { resolveServerCommand } from "./serverCommand";
import { GpoSettings, configurationResult, needsRestart, readSettings } from "./settings";

const LANGUAGE = "dotprompt";
// Example sets may be named anything through gpo.examples; the server filters.
const EXAMPLE_FILES = "**/*.{jsonl,csv,yaml,yml}";

let client: LanguageClient | undefined;
let output: vscode.OutputChannel | undefined;
const previews = new Map<string, string>(); // virtual URI -> suggested document
const previewChanged = new vscode.EventEmitter<vscode.Uri>();

function settingsFor(scopeUri: string | undefined): GpoSettings {
  const scope = scopeUri ? vscode.Uri.parse(scopeUri) : undefined;
  const config = vscode.workspace.getConfiguration("gpo", scope);
  return readSettings((key) => config.get(key));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, process.platform === "win32" ? fs.constants.F_OK : fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

// The Python extension's API changed over time; read it defensively.
async function activeInterpreter(): Promise<string | undefined> {
  const python = vscode.extensions.getExtension("ms-python.python");
  if (!python) {
    return undefined;
  }
  try {
    const api: any = python.isActive ? python.exports : await python.activate();
    const resource = vscode.window.activeTextEditor?.document.uri;
    const environments = api?.environments;
    if (environments?.getActiveEnvironmentPath) {
      const active = environments.getActiveEnvironmentPath(resource);
      const resolved = await environments.resolveEnvironment?.(active);
      const executable: string | undefined = resolved?.executable?.uri?.fsPath ?? active?.path;
      if (executable) {
        return executable;
      }
    }
    const details = await api?.settings?.getExecutionDetails?.(resource);
    const command: string[] | undefined = details?.execCommand;
    return command && command.length > 0 ? command[0] : undefined;
  } catch (error) {
    output?.appendLine(`Could not ask the Python extension for the interpreter: ${error}`);
    return undefined;
  }
}

async function startClient(): Promise<void> {
  const config = vscode.workspace.getConfiguration("gpo");
  const resolved = resolveServerCommand({
    configuredPath: config.get<string>("server.path") ?? "",
    interpreter: await activeInterpreter(),
    pathEnv: process.env.PATH ?? "",
    platform: process.platform,
    home: os.homedir(),
    isExecutable,
  });
  if (!resolved.ok) {
    output?.appendLine(resolved.message);
    void vscode.window.showErrorMessage(resolved.message);
    return;
  }
  output?.appendLine(`Starting ${resolved.command} ${resolved.args.join(" ")} (${resolved.source})`);
  const serverOptions: ServerOptions = {
    command: resolved.command,
    args: resolved.args,
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: LANGUAGE },
      { scheme: "untitled", language: LANGUAGE },
    ],
    initializationOptions: settingsFor(undefined),
    outputChannel: output,
    synchronize: {
      fileEvents: vscode.workspace.createFileSystemWatcher(EXAMPLE_FILES),
    },
    middleware: {
      workspace: {
        // Answer section "gpo" with the normalized settings object, not
        // VS Code's raw configuration tree.
        configuration: (params) => configurationResult(params.items, settingsFor),
      },
    },
  };
  client = new LanguageClient("gpo", "GPO", serverOptions, clientOptions);
  await client.start();
}

async function stopClient(): Promise<void> {
  const running = client;
  client = undefined;
  if (running) {
    await running.stop();
  }
}

function activeDotprompt(): vscode.TextDocument | undefined {
  const document = vscode.window.activeTextEditor?.document;
  return document?.languageId === LANGUAGE ? document : undefined;
}

async function runServerCommand(command: string): Promise<void> {
  const document = activeDotprompt();
  if (!client || !document) {
    void vscode.window.showInformationMessage("GPO: open a .prompt file first.");
    return;
  }
  await client.sendRequest(ExecuteCommandRequest.type, {
    command,
    arguments: [document.uri.toString()],
  });
}

async function previewSuggestion(): Promise<void> {
  const document = activeDotprompt();
  if (!client || !document) {
    void vscode.window.showInformationMessage("GPO: open a .prompt file first.");
    return;
  }
  const original = document.uri.toString();
  const answer = await client.sendRequest(SUGGESTION_REQUEST, {
    textDocument: { uri: original },
  });
  if (!isSuggestionAnswer(answer)) {
    void vscode.window.showInformationMessage("GPO: no suggestion for this prompt yet.");
    return;
  }
  const virtual = vscode.Uri.parse(suggestionUri(original));
  previews.set(virtual.toString(), answer.text);
  previewChanged.fire(virtual);
  await vscode.commands.executeCommand(
    "vscode.diff",
    document.uri,
    virtual,
    diffTitle(original, answer),
  );
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("GPO");
  context.subscriptions.push(
    output,
    previewChanged,
    vscode.workspace.registerTextDocumentContentProvider(SCHEME, {
      onDidChange: previewChanged.event,
      provideTextDocumentContent: (uri) => previews.get(uri.toString()) ?? "",
    }),
    vscode.commands.registerCommand("gpo.restartServer", async () => {
      await stopClient();
      await startClient();
    }),
    vscode.commands.registerCommand("gpo.previewSuggestion", previewSuggestion),
    vscode.commands.registerCommand("gpo.optimizeFile", () => runServerCommand("gpo.optimize")),
    vscode.commands.registerCommand("gpo.stopFile", () => runServerCommand("gpo.stop")),
    vscode.commands.registerCommand("gpo.rescoreFile", () => runServerCommand("gpo.rescore")),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("gpo")) {
        return;
      }
      if (needsRestart((section) => event.affectsConfiguration(section))) {
        await stopClient();
        await startClient();
      } else if (client) {
        // The server pulls the new values with workspace/configuration.
        await client.sendNotification("workspace/didChangeConfiguration", {
          settings: { gpo: settingsFor(undefined) },
        });
      }
    }),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  await stopClient();
}
