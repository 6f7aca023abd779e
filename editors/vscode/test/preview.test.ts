import assert from "node:assert/strict";
import { test } from "node:test";

import { SCHEME, diffTitle, isSuggestionAnswer, suggestionUri } from "../src/preview";

test("the virtual URI keeps the file name and carries the original URI", () => {
  const original = "file:///home/u/my%20prompts/sentiment.prompt";
  const uri = suggestionUri(original);
  assert.ok(uri.startsWith(`${SCHEME}:/`));
  assert.equal(uri.split("?")[0], `${SCHEME}:/sentiment.prompt`);
  assert.equal(decodeURIComponent(uri.slice(uri.indexOf("?") + 1)), original);
});

test("different documents get different virtual URIs", () => {
  assert.notEqual(suggestionUri("file:///a/x.prompt"), suggestionUri("file:///b/x.prompt"));
});

test("the server's answer is checked before use", () => {
  assert.equal(isSuggestionAnswer({ text: "---\n---\nHi", title: "Apply" }), true);
  assert.equal(isSuggestionAnswer(null), false);
  assert.equal(isSuggestionAnswer({ text: 1, title: "x" }), false);
  assert.equal(isSuggestionAnswer("text"), false);
});

test("the diff title names the file and the gain", () => {
  assert.equal(
    diffTitle("file:///w/sentiment.prompt", {
      text: "",
      title: "Apply GPO suggestion (+7.5 pts, 12/31 words)",
    }),
    "sentiment.prompt ↔ GPO suggestion (+7.5 pts, 12/31 words)",
  );
});
