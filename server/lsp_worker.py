"""`python -m gpo_server.lsp_worker`: analyses documents for the language server.

A child of `gpo lsp` (see lsp_analysis), so a document that takes seconds to
parse takes them here, where it can be stopped, instead of in the server's
event loop. It reads requests from stdin and answers on stdout, one at a
time, each a length-prefixed pickle (see `read_frame`): the request is
`(text, path, with_examples)`, the answer the `Analysis` of it. An empty
frame first says it is ready. It exits when stdin closes. Like the server,
it never imports the model layer.
"""

from __future__ import annotations

import pickle
import struct
import sys
from pathlib import Path
from typing import BinaryIO

from gpo_engine.errors import Problem
from gpo_server.lsp_documents import Analysis, analyze

HEADER = struct.Struct(">Q")  # the byte length of the pickle that follows


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's bytes, or None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def frame(data: bytes) -> bytes:
    return HEADER.pack(len(data)) + data


def answer(request: bytes) -> bytes:
    """The pickled Analysis for one pickled request; never raises for a bad document."""
    text, path, with_examples = pickle.loads(request)
    analysis = analyze(text, Path(path), with_examples=with_examples)
    try:
        return pickle.dumps(analysis)
    except (RecursionError, pickle.PicklingError, TypeError, AttributeError) as exc:
        # A frontmatter nested too deep to send back is reported, not a dead worker.
        return pickle.dumps(Analysis(None, (Problem(
            Path(path), 1, 1, f"gpo could not analyse this file: {exc}"),), None))


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Say ready (an empty frame, once the parsers are imported), then answer each request."""
    sink.write(frame(b""))
    sink.flush()
    while (request := read_frame(source)) is not None:
        sink.write(frame(answer(request)))
        sink.flush()


def main() -> None:
    # The parsers load before the worker says ready, so a document's time limit
    # is spent on the document, not on imports.
    import gpo_engine.examples
    import gpo_engine.promptfile  # noqa: F401
    import gpo_server.lsp_lint  # noqa: F401

    sink = sys.stdout.buffer
    sys.stdout = sys.stderr  # a library's stray print must not break a frame
    serve(sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
