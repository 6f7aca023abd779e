"""The JSON-RPC protocol of `gpo lsp`: pygls's, with UTF-16 positions and every request answered."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

SUGGESTION_REQUEST = "gpo/suggestion"  # editors/vscode src/preview.ts


class Utf16Protocol(LanguageServerProtocol):
    """pygls with UTF-16 positions whatever the client prefers.

    Every position gpo sends is counted in UTF-16 code units (text_positions),
    which LSP requires every client to speak. pygls would otherwise take the
    client's first choice (Emacs 29+ eglot offers utf-32 first) and the columns
    of a line with an emoji would be off."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, Any]:
        general = params.capabilities.general
        if general is not None and general.position_encodings:
            params.capabilities.general = attrs.evolve(
                general, position_encodings=[types.PositionEncodingKind.Utf16])
        return (yield from super().lsp_initialize(params))

    def structure_message(self, data: dict[str, Any]) -> Any:
        """pygls drops a request whose params it cannot type (a position with line -1 or
        beyond 2^31 - 1, out of LSP's uinteger): the client would wait forever. Such a
        request gets an answer: null (nothing there), or InvalidParams for gpo's own
        request, whose params are gpo's to define."""
        try:
            return super().structure_message(data)
        except (JsonRpcInvalidParams, JsonRpcInternalError):
            if not (isinstance(data, dict) and "id" in data and "method" in data
                    and isinstance(data["id"], (int, str)) and data.get("jsonrpc") == "2.0"):
                raise
            if data["method"] == SUGGESTION_REQUEST:
                self._send_response(data["id"], error=types.ResponseError(
                    code=JsonRpcInvalidParams.CODE, message="invalid gpo/suggestion params"))
            else:
                self._send_response(data["id"], result=None)
            # Handled: what pygls goes on with is a notification nobody listens to.
            return JsonRPCNotification(method="$/gpo/unreadableRequest", jsonrpc="2.0",
                                       params=None)
