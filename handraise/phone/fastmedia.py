"""The fast path for ``/voice/stream``: picows on uvloop, on the app's own port.

``handraise serve`` accepts every connection itself and reads the request line without
consuming it (``MSG_PEEK``): a ``GET /voice/stream`` goes to a picows WebSocket
listener, anything else to hypercorn, which serves the Quart app as before (webhooks,
pages, SSE, the API). One port, one public URL: nothing for an operator to configure, and
a TLS proxy in front needs only to pass WebSocket upgrades through (README, "Serving").
The listener shares the app's Redis, settings and services, runs the same per-stream code
(:class:`~.media.MediaStream`), and checks ``X-Twilio-Signature`` on the upgrade with the
rules of :mod:`.security` (403 when it does not validate).

Why picows (measured on this machine, one server core, 500 streams each paced at one
320-byte text message per 20 ms, 25,000 messages/s, the load generator on the other
core; server CPU from ``getrusage`` per message, receiving only):

=============================  ==============
server                         µs per message
=============================  ==============
hypercorn + wsproto (Quart)    ~50 (issue 13)
uvicorn                        ~25-40 (issue 13)
websockets 17 server + uvloop  23-26
picows 2.3 + asyncio loop      12-14
picows 2.3 + uvloop            10.6-11.7
=============================  ==============

The whole keypad path (framing, fast JSON path, base64, queueing, the batched detector,
bookkeeping) is in ``bench/media.py``'s figures. The read batch (``SO_RCVLOWAT``, setting
``HANDRAISE_MEDIA_READ_BATCH``, default 3) was decided by them, 1000 paced streams on one
core, the same run for both values: batch 1, 80 % of the core (16.1 µs per message), key
release -> hand p99 128 ms; batch 3, 68 % (13.6 µs), p99 48 ms. Fewer wake-ups per message
leave the loop less busy, so keys are answered sooner even though each socket is read only
every 60 ms. A stream's last messages (its ``stop``) are fewer bytes than the mark, so they
would wait unread until the peer closes, and a peer that waits for our close first (the
emulator, a careful Twilio) would stall: every :data:`QUIET_S` the server lowers the mark to
one byte on each socket that delivered nothing since the last look (the kernel then wakes
the reader for what is waiting), and raises it again once messages flow.

``--workers N`` runs N such processes, each with its own ``SO_REUSEPORT`` socket on the
same port (the kernel spreads connections); every process reads every room's events from
Redis, as one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs
from quart import Quart

from ..config import Settings
from .media import MediaHub, MediaStream, media_hub
from .security import websocket_signature_valid

log = logging.getLogger(__name__)
_WS_LOG = logging.getLogger(__name__ + ".ws")
# picows logs every accepted connection at INFO; the stream's own start line says more.
_WS_LOG.setLevel(logging.WARNING)

MEDIA_PATH = "/voice/stream"
PEEK_BYTES = 2048
"""Bytes of a new connection read ahead (not consumed) to find its request line."""
FIRST_LINE_TIMEOUT_S = 10.0
"""A connection that sends no request line in this time is closed."""
MAX_MESSAGE_BYTES = 64 * 1024
"""Longest WebSocket message taken (a media message is about 330 bytes)."""
READ_BATCH_BYTES = 300
"""Bytes per message counted for ``SO_RCVLOWAT``: a 20 ms media message of Twilio's is
about 350 bytes on the wire, so N x 300 bytes wait for N of them."""
QUIET_S = 0.1
"""With batched reads: a socket that delivered no message for this long is read at once
(its mark lowered to one byte): a stream that is ending, or a peer that paused."""
GRACEFUL_S = 5.0
"""At shutdown: longest wait for HTTP requests in flight."""


class _MediaSocket(WSListener):
    """picows callbacks of one media socket -> :class:`MediaStream`."""

    def __init__(self, app: Quart, hub: MediaHub, batching: _Batching) -> None:
        from .webhooks import phone

        self.svc = phone(app)
        self.hub = hub
        self.batching = batching
        self.transport: WSTransport | None = None
        self.stream: MediaStream | None = None
        self.parts: list[bytes] = []
        self.size = 0
        #: Messages since the batching sweep last looked; whether the mark is lowered.
        self.count = 0
        self.lowered = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.stream = MediaStream(self.svc, self.hub, self._close)
        if self.batching.batch > 1:
            # Wake up for this socket only once a few messages are waiting: one read then
            # takes them all (see READ_BATCH_BYTES). Set after the upgrade, whose request
            # is smaller; a closing peer (FIN) wakes it up whatever is waiting, and so does
            # the sweep of quiet sockets (_Batching).
            self.batching.add(self)

    def set_mark(self, messages: int) -> None:
        """``SO_RCVLOWAT`` for ``messages`` media messages (1: any byte)."""
        if self.transport is None:
            return
        sock = self.transport.underlying_transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT,
                            messages * READ_BATCH_BYTES if messages > 1 else 1)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.count += 1
        stream = self.stream
        if stream is None:
            return
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if frame.fin:
                stream.on_message(frame.get_payload_as_bytes())
                return
            self.parts, self.size = [frame.get_payload_as_bytes()], frame.payload_size
        elif kind is WSMsgType.CONTINUATION and self.parts:
            self.size += frame.payload_size
            if self.size > MAX_MESSAGE_BYTES:
                self.parts = []
                stream.on_message(b"")  # counted and logged as a skipped frame
                return
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                message = b"".join(self.parts)
                self.parts = []
                stream.on_message(message)
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.batching.discard(self)
        if self.stream is not None:
            self.stream.dropped()

    def _close(self, code: int, reason: str) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode(code), reason.encode())
            self.transport.disconnect()


class _Batching:
    """Batched reads (``SO_RCVLOWAT``) of every media socket of a process, and the sweep
    that reads a quiet socket at once (see the module docstring)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.sockets: set[_MediaSocket] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, sock: _MediaSocket) -> None:
        sock.set_mark(self.batch)
        self.sockets.add(sock)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep_forever())

    def discard(self, sock: _MediaSocket) -> None:
        self.sockets.discard(sock)

    def sweep(self) -> None:
        """Lower the mark of each socket that delivered nothing since the last sweep;
        raise it again on one that delivered a batch's worth since."""
        for sock in self.sockets:
            if not sock.lowered:
                if not sock.count:
                    sock.set_mark(1)
                    sock.lowered = True
            elif sock.count >= self.batch:
                sock.set_mark(self.batch)
                sock.lowered = False
            sock.count = 0

    async def _sweep_forever(self) -> None:
        while self.sockets:
            await asyncio.sleep(QUIET_S)
            self.sweep()


def media_listener_factory(
    app: Quart, settings: Settings
) -> Callable[[WSUpgradeRequest], Any]:
    """picows listener factory: the signed ``/voice/stream`` upgrade, or 403 / 404."""
    hub = media_hub(app)
    batching = _Batching(settings.media_read_batch)

    def factory(request: WSUpgradeRequest) -> Any:
        target = request.path.decode("latin-1")
        path, _, query = target.partition("?")
        if path != MEDIA_PATH:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(404, b"Not found.\n"), None)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not websocket_signature_valid(settings, path, query, signature):
            log.warning("refused websocket %s: missing or invalid X-Twilio-Signature", path)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                403, b"Forbidden: invalid Twilio signature.\n",
                {"Content-Type": "text/plain"}), None)
        return _MediaSocket(app, hub, batching)

    return factory


def _is_media_request(head: bytes) -> bool:
    method, _, rest = head.partition(b" ")
    target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    return method == b"GET" and target == MEDIA_PATH.encode()


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (``SO_REUSEPORT`` for workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server:
    """One process serving ``app``: peeks each connection and hands it to picows or hypercorn."""

    def __init__(self, app: Quart, settings: Settings) -> None:
        from hypercorn.asyncio.lifespan import Lifespan
        from hypercorn.asyncio.worker_context import WorkerContext
        from hypercorn.config import Config
        from hypercorn.utils import wrap_app

        self.loop = asyncio.get_running_loop()
        self.app = app
        self.settings = settings
        config = Config()
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = GRACEFUL_S
        self.config = config
        self.asgi = wrap_app(app, config.wsgi_max_body_size, None)
        self.state: dict[str, Any] = {}
        self.lifespan = Lifespan(self.asgi, config, self.loop, self.state)
        self.context = WorkerContext(None)
        self.http_tasks: set[asyncio.Task[None]] = set()
        self.media: set[WSProtocol] = set()
        self.listeners: list[socket.socket] = []
        self._waiting: dict[socket.socket, asyncio.TimerHandle] = {}
        self._ws_factory: Callable[[WSUpgradeRequest], Any] | None = None

    async def start(self, socks: list[socket.socket]) -> None:
        self._lifespan_task = self.loop.create_task(self.lifespan.handle_lifespan())
        await self.lifespan.wait_for_startup()
        if self._lifespan_task.done() and self._lifespan_task.exception() is not None:
            raise self._lifespan_task.exception()  # type: ignore[misc]
        self._ws_factory = media_listener_factory(self.app, self.settings)
        for sock in socks:
            self.listeners.append(sock)
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    # --- accepting -----------------------------------------------------------------

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(128):
            try:
                conn, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("serve: accept failed: %s", exc)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._waiting[conn] = self.loop.call_later(FIRST_LINE_TIMEOUT_S, self._drop, conn)
            self.loop.add_reader(conn.fileno(), self._peek, conn)

    def _drop(self, conn: socket.socket) -> None:
        timer = self._waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(conn.fileno())
        conn.close()

    def _peek(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not head:
            self._drop(conn)
            return
        if b"\r\n" not in head and len(head) < PEEK_BYTES:
            # Half a request line: look again shortly (readiness is level-triggered).
            self.loop.remove_reader(conn.fileno())
            self.loop.call_later(0.005, self.loop.add_reader, conn.fileno(), self._peek, conn)
            return
        timer = self._waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()
        self.loop.remove_reader(conn.fileno())
        if _is_media_request(head):
            self.loop.create_task(self._media(conn))
        else:
            task = self.loop.create_task(self._http(conn))
            self.http_tasks.add(task)
            task.add_done_callback(self.http_tasks.discard)

    async def _media(self, conn: socket.socket) -> None:
        factory = self._ws_factory
        assert factory is not None

        def protocol() -> WSProtocol:
            # Positional, as picows.ws_create_server builds it: host_port, ws_path, client
            # side, factory, logger, disconnect on exception, handshake timeout, auto ping
            # (off; Twilio streams all the time), its timeouts and strategy, auto pong,
            # largest frame, extra headers, read buffer.
            proto = WSProtocol(None, None, False, factory, _WS_LOG, True, 5.0,
                               False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
                               MAX_MESSAGE_BYTES, None, 16 * 1024)
            self.media.add(proto)
            return proto

        try:
            _, proto = await self.loop.connect_accepted_socket(protocol, conn)
        except OSError:
            conn.close()
            return
        try:
            transport: WSTransport | None = proto.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    await transport.wait_disconnected()
        finally:
            self.media.discard(proto)

    async def _http(self, conn: socket.socket) -> None:
        from hypercorn.asyncio.tcp_server import TCPServer

        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        await TCPServer(self.asgi, self.loop, self.config, self.context, self.state,
                        reader, writer)

    # --- stopping ------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting; finish media streams; let HTTP finish; then the app's shutdown."""
        for sock in self.listeners:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for conn in list(self._waiting):
            self._drop(conn)
        hub: MediaHub | None = self.app.extensions.get("handraise_media")
        if hub is not None:
            if hub.open:
                log.info("serve: stopping; finishing %d media streams", len(hub.open))
            await hub.drain()
        for proto in list(self.media):
            with contextlib.suppress(Exception):
                proto.transport.send_close(WSCloseCode.GOING_AWAY, b"server stopping")
                proto.transport.disconnect()
        await self.context.terminated.set()
        if self.http_tasks:
            _, pending = await asyncio.wait(set(self.http_tasks), timeout=GRACEFUL_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self.lifespan.wait_for_shutdown()
        self._lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._lifespan_task


async def serve_app(
    app: Quart,
    settings: Settings,
    socks: list[socket.socket],
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``socks`` (HTTP by hypercorn, ``/voice/stream`` by picows) until
    ``shutdown_trigger`` returns (default: SIGINT or SIGTERM)."""
    loop = asyncio.get_running_loop()
    if shutdown_trigger is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        shutdown_trigger = stop.wait
    server = _Server(app, settings)
    await server.start(socks)
    if ready is not None:
        ready()
    try:
        await shutdown_trigger()
    finally:
        await server.stop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (it is a dependency), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(settings: Settings, host: str, port: int, *, reuse_port: bool,
               banner: bool) -> None:
    """One serving process: build the app, serve until SIGINT/SIGTERM."""
    from ..app import create_app

    sock = listening_socket(host, port, reuse_port=reuse_port)
    app = create_app(settings)

    def ready() -> None:
        # Everything built at start-up (the app, its libraries, templates) lives as long as
        # the process: out of the collector's sight, a full collection under load scans only
        # what the streams made, not the whole heap.
        gc.collect()
        gc.freeze()
        if banner:
            print(f"handraise serving on http://{host}:{port}  (health: /healthz; "
                  f"media streams on the same port)", flush=True)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve_app(app, settings, [sock], ready=ready))


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """``handraise serve``: one process, or ``workers`` processes on one port."""
    if workers <= 1:
        run_worker(settings, host, port, reuse_port=False, banner=True)
        return 0
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=run_worker, args=(settings, host, port),
                         kwargs={"reuse_port": True, "banner": i == 0}, name=f"worker-{i}")
             for i in range(workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for proc in procs:
        proc.join()
        code = code or (proc.exitcode or 0)
    return code
