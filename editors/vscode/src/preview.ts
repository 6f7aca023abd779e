// "Preview suggestion": the suggested document lives in a virtual document
// (scheme gpo-suggestion) whose URI carries the original document's URI, so
// VS Code's diff view can show original and suggestion side by side.

export const SCHEME = "gpo-suggestion";
/** The custom request the language server answers with the suggested document. */
export const SUGGESTION_REQUEST = "gpo/suggestion";

/** Answer of gpo/suggestion: the whole suggested document and the apply action's title. */
export interface SuggestionAnswer {
  text: string;
  title: string;
}

export function isSuggestionAnswer(value: unknown): value is SuggestionAnswer {
  if (value === null || typeof value !== "object") {
    return false;
  }
  const v = value as Record<string, unknown>;
  return typeof v.text === "string" && typeof v.title === "string";
}

function baseName(uri: string): string {
  const clean = uri.split(/[?#]/)[0];
  const name = clean.slice(clean.lastIndexOf("/") + 1);
  return decodeURIComponent(name) || "prompt";
}

/** The virtual document's URI for an original document URI (as a string). */
export function suggestionUri(original: string): string {
  // The path ends with the file name so the diff tab shows it and the
  // language (dotprompt) follows from the extension.
  return `${SCHEME}:/${encodeURIComponent(baseName(original))}?${encodeURIComponent(original)}`;
}

export function diffTitle(original: string, answer: SuggestionAnswer): string {
  // "sentiment.prompt ↔ Apply GPO suggestion (+7.5 pts, 12/31 words)"
  return `${baseName(original)} ↔ ${answer.title.replace(/^Apply /, "")}`;
}
