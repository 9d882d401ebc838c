"""`make run`'s front door: one address for the browser, as a production proxy gives it.

The live status streams (`bookings.streams.routing.STREAM_PATH`) go to the events process and every
other request to the web server, so a page and its stream share one origin: the browser sends its
session cookie to both, with no cross-origin rules. Production puts the same path rule in its own
proxy instead (docs/design.md, "Live status").

One request per connection: the router reads the request's head, picks the upstream by its path,
asks the upstream to close once it has answered (`Connection: close`), and copies the bytes both
ways until it does, so a response, streamed or not, reaches the client as it is written. A client
that goes away closes its upstream connection too (a stream then ends at once); one that only
half-closes after its request (it sends nothing more) still gets the whole answer.

An upstream that is not listening (restarting under `make run`) is a 503 with Retry-After, as the
API answers when it cannot serve; one that closes the connection before answering anything (a
worker killed mid-request) is a 502: both in the one error shape. Once the first byte of an
answer has passed, a broken answer can only be a closed connection.

`python -m config.router --port 8000 --web 8002 --events 8003` (the Procfile's `router`), or
`serve()` from a test or a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass

from bookings.streams.routing import STREAM_PATH
from config.raw_errors import UNAVAILABLE_MESSAGE, UNAVAILABLE_RETRY_AFTER_S, error_message, http_error

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
# Headers about this hop's connection only; the router speaks for itself on both hops.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"te", b"trailer"})


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Router:
    web: Upstream
    events: Upstream
    retry_after_s: int = UNAVAILABLE_RETRY_AFTER_S

    def upstream_for(self, path: str) -> Upstream:
        return self.events if STREAM_PATH.match(path) else self.web

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _answer(client_writer, 431, "request_header_fields_too_large", error_message(431, ""))
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            client_writer.close()
            return
        request = _forwarded_head(head, client_writer.get_extra_info("peername"))
        if request is None:
            await _answer(client_writer, 400, "bad_request", "Malformed request.")
            return
        path, forwarded = request
        upstream = self.upstream_for(path)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(upstream.host, upstream.port)
        except OSError:
            logger.warning("router: %s does not answer; answered 503", upstream)
            headers = {"Retry-After": str(self.retry_after_s)}
            await _answer(client_writer, 503, "service_unavailable", UNAVAILABLE_MESSAGE, headers)
            return
        upstream_writer.write(forwarded)
        answer = asyncio.ensure_future(_copy(upstream_reader, client_writer))
        ask = asyncio.ensure_future(_copy(client_reader, upstream_writer))
        try:
            # The answer is complete when the upstream closes, or over when the client can no
            # longer take it. The client's end of file says only that it sends nothing more: one
            # that half-closes after its request still reads the answer. So the upstream is told
            # (an events process then ends its stream, as for a client that left) and the answer
            # goes on; a client that left ends it at the first write that fails.
            await asyncio.wait({answer, ask}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():
                _write_eof(upstream_writer)
                await asyncio.wait({answer})
            if not answer.cancelled() and not answer.exception() and answer.result() == 0:
                logger.warning("router: %s closed the connection without answering; answered 502", upstream)
                message = "The server closed the connection without answering."
                await _answer(client_writer, 502, "bad_gateway", message)
        finally:
            for copy in (answer, ask):
                copy.cancel()
            for writer in (upstream_writer, client_writer):
                writer.close()
            await asyncio.gather(answer, ask, return_exceptions=True)


def _forwarded_head(head: bytes, peer: tuple | None) -> tuple[str, bytes] | None:
    """The request's path and its head as the upstream gets it: this hop's headers replaced by
    `Connection: close`, and the client's address added to X-Forwarded-For."""
    request_line, *lines = head[:-4].split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/"):
        return None
    headers: list[bytes] = []
    forwarded_for = b""
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        name = name.strip().lower()
        if name == b"x-forwarded-for":
            forwarded_for = value.strip() + b", "
        elif name not in _HOP_BY_HOP:
            headers.append(line)
    client = (peer[0] if peer else "unknown").encode()
    headers += [b"X-Forwarded-For: " + forwarded_for + client, b"Connection: close"]
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    return path, b"\r\n".join([request_line, *headers]) + b"\r\n\r\n"


def _write_eof(writer: asyncio.StreamWriter) -> None:
    """Half-close the connection: the other end reads its end of file, and may still answer."""
    with contextlib.suppress(OSError):  # already broken: the answer's copy sees it
        if writer.can_write_eof():
            writer.write_eof()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Copy until the reader's end closes (or either end breaks); how many bytes were copied."""
    copied = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(CHUNK_BYTES):
            writer.write(chunk)
            copied += len(chunk)
            await writer.drain()
    return copied


async def _answer(
    writer: asyncio.StreamWriter, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    writer.write(http_error(status, code, message, headers))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def serve(
    *,
    port: int,
    web: Upstream,
    events: Upstream,
    host: str = "127.0.0.1",
    retry_after_s: int = UNAVAILABLE_RETRY_AFTER_S,
) -> asyncio.Server:
    """Listen on host:port (0: a free port; read it from the server's sockets)."""
    router = Router(web=web, events=events, retry_after_s=retry_after_s)
    return await asyncio.start_server(router.handle, host, port, limit=MAX_HEAD_BYTES)


def command(*, port: int, web_port: int, events_port: int) -> list[str]:
    return [
        sys.executable, "-m", "config.router",
        "--port", str(port), "--web", str(web_port), "--events", str(events_port),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.router", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--web", type=int, required=True, help="the web server's port (on 127.0.0.1)")
    parser.add_argument("--events", type=int, required=True, help="the events process's port (on 127.0.0.1)")
    parser.add_argument(
        "--retry-after",
        type=int,
        default=int(os.environ.get("UNAVAILABLE_RETRY_AFTER_S", UNAVAILABLE_RETRY_AFTER_S)),
        help="Retry-After of the 503 while an upstream does not answer (default: UNAVAILABLE_RETRY_AFTER_S)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    async def run() -> None:
        server = await serve(
            host=args.host,
            port=args.port,
            web=Upstream("127.0.0.1", args.web),
            events=Upstream("127.0.0.1", args.events),
            retry_after_s=args.retry_after,
        )
        where = f"http://{args.host}:{args.port}"
        print(f"router on {where}: streams to :{args.events}, the rest to :{args.web}", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
