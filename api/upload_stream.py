"""Receiving a multipart upload as a stream: the ``file`` part goes to a temp file, hashed and counted
as it arrives; small form fields (``metadata``) are kept in memory up to 64 KiB each.

``python-multipart``'s push parser (the one Starlette itself is built on) is fed the body chunk by
chunk from ``request.stream()``; ``await request.form()`` is not used because it spools whole files
before the route sees them. The file's size is counted while streaming, with or without a
Content-Length and for chunked bodies too: past ``max_file_bytes`` the request fails with 413 at once
(a declared Content-Length that is already too large is refused before reading). The app's general
body limit does not apply to these routes (their own, larger limit is here).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.problems import Problem

MAX_FIELD_BYTES = 64 * 1024
#: Room for the multipart framing and the fields around the file, on top of the file's limit.
FRAMING_BYTES = 256 * 1024


@dataclass
class ReceivedUpload:
    """What arrived: the fields, and the file part's temp path, sha256, size and client file name."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    size: int = 0
    filename: str | None = None


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", f"the uploaded file exceeds the limit of {limit} bytes", limit=limit)


async def receive_upload(request: Request, *, max_file_bytes: int, tmp_dir: str | None = None) -> ReceivedUpload:
    """Stream the multipart body of ``request`` (module docstring). The caller deletes ``path``."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise Problem(415, "unsupported-media-type", "send multipart/form-data with a 'file' part and a "
                      "'metadata' part (JSON)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_file_bytes + FRAMING_BYTES:
        raise _too_large(max_file_bytes)

    out = ReceivedUpload()
    state: dict[str, object] = {"name": None, "header": b"", "headers": {}, "buf": None, "sink": None}
    hasher = hashlib.sha256()
    sink: IO[bytes] | None = None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] = bytes(state["header"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        headers: dict[bytes, bytes] = state["headers"]  # type: ignore[assignment]
        key = bytes(state["header"]).lower()  # type: ignore[arg-type]
        headers[key] = headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["header"] = b""

    def on_headers_finished() -> None:
        nonlocal sink
        headers: dict[bytes, bytes] = state["headers"]  # type: ignore[assignment]
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == "file":
            if out.path is not None:
                raise Problem(422, "invalid-upload", "more than one 'file' part")
            sink = tempfile.NamedTemporaryFile(prefix="glorot-upload-", dir=tmp_dir, delete=False)  # noqa: SIM115
            out.path = Path(sink.name)
            fn = disp.get(b"filename")
            out.filename = fn.decode("utf-8", "replace")[:255] if fn else None
        else:
            state["buf"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == "file":
            out.size += len(chunk)
            if out.size > max_file_bytes:
                raise _too_large(max_file_bytes)
            hasher.update(chunk)
            assert sink is not None
            sink.write(chunk)
        else:
            buf: bytearray = state["buf"]  # type: ignore[assignment]
            buf += chunk
            if len(buf) > MAX_FIELD_BYTES:
                raise Problem(413, "payload-too-large", f"form field {state['name']!r} exceeds {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        nonlocal sink
        name = str(state["name"])
        if name == "file" and sink is not None:
            sink.close()
            sink = None
        elif name != "file":
            out.fields[name] = bytes(state["buf"]).decode("utf-8", "replace")  # type: ignore[arg-type]
        state.update(name=None, headers={}, buf=None)

    parser = MultipartParser(boundary, callbacks={  # type: ignore[arg-type]
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        _discard(sink, out)
        raise Problem(422, "invalid-upload", f"the multipart body is malformed: {e}") from None
    except BaseException:
        _discard(sink, out)
        raise
    if sink is not None:  # the body ended inside the file part
        sink.close()
        out.path.unlink(missing_ok=True)  # type: ignore[union-attr]
        raise Problem(422, "invalid-upload", "the multipart body ended before the file part did")
    out.sha256 = hasher.hexdigest()
    return out


def _discard(sink: IO[bytes] | None, out: ReceivedUpload) -> None:
    if sink is not None:
        sink.close()
    if out.path is not None:
        out.path.unlink(missing_ok=True)
