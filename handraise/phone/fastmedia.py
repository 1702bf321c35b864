"""The fast path for ``/voice/stream``: media streams read in C, once per tick, on the app's port.

``handraise serve`` accepts every connection itself and reads the request line without
consuming it (``MSG_PEEK``): a ``GET /voice/stream`` is a media stream, Twilio's fetch of a
fixed private announcement is answered here too (:mod:`.fastannounce`), anything else goes
to hypercorn, which serves the Quart app as before (webhooks, pages, SSE, the API). One
port, one public URL: nothing for an operator to configure, and a TLS proxy in front needs
only to pass WebSocket upgrades through (README, "Serving"). A head that comes in pieces
wakes the server only as more of it arrives (``SO_RCVLOWAT``, so half a head never keeps
the loop busy); a peer gone mid-head is closed at once, and one still silent after
:data:`FIRST_LINE_TIMEOUT_S` too.

A media stream's upgrade is answered here, in Python: ``X-Twilio-Signature`` is checked with
the rules of :mod:`.security` (403 when it does not validate), a request that is not a
WebSocket upgrade gets 400 (426 for another protocol version), a head over
:data:`MAX_HEAD_BYTES` 431; each refusal is followed by a lingering close, so that a reset
does not destroy it (:meth:`_Server._answer_and_close`). From then on the socket
belongs to one :class:`~handraise.phone._wsread.Reader` per process (``_wsread.c``): every
N detection ticks of :data:`~.media.TICK_S` (N by ``HANDRAISE_MEDIA_READ_BATCH``,
:func:`read_batch`) it reads every socket that has bytes, takes the WebSocket frames out
(masking, fragments, ping, close, protocol errors), decodes the payloads of the usual
media messages of each stream straight into that stream's audio, and returns everything
else (``start``, ``stop``, ``mark``, anything unusual or malformed) whole. Each stream's
protocol logic is :class:`~.media.MediaStream`, as for the Quart route. The server writes
only close frames (1000 after ``stop``, 1008 refused, 1001 at shutdown, 1002 for a
protocol error), then waits up to :data:`CLOSE_WAIT_S` for the peer's close before it
closes the socket.

Why this design (measured on this machine, one server core, the load generator on the
other; each stream paced at one 320-byte text message per 20 ms):

=============================================  =====================================
server                                         server CPU
=============================================  =====================================
hypercorn + wsproto (Quart)                    ~50 µs per message (issue 13)
uvicorn                                        ~25-40 µs per message (issue 13)
websockets 17 server + uvloop                  23-26 µs per message, receiving only
picows 2.3 + uvloop                            10.6-11.7 µs per message, receiving only;
                                               the whole keypad path 16.1 µs (1000
                                               streams, 80 % of the core), with
                                               ``SO_RCVLOWAT`` batches of 3: 13.6 µs
this module: a C reader, read every 4 ticks     the whole keypad path 6.8-9.7 µs (34-48
                                               % of the core), Node reference 100 %
=============================================  =====================================

With picows, one Python callback per message (and uvloop's per-socket wake-ups) was the
floor: 32-48 % of the core at 1000 streams before any work of ours, against the Node
reference's 85-100 % for the whole job, so half of Node's CPU was out of reach. Reading at
the tick turns 50,000 wake-ups and callbacks a second into 12.5 ``poll(2)`` calls, one
``recv(2)`` per socket that has bytes (about 8 µs each on this machine, most of what the
reader costs), and no Python object per media message: the reader decodes each payload
straight into its stream's row of the keypad bank's queues.

The read batch (``HANDRAISE_MEDIA_READ_BATCH``, ticks between reads) was chosen by
``bench/media.py``, 1000 paced streams pressing ``*1`` (each caller every 15 s on average),
one core; CPU of the core, then key release -> hand in Redis p99:

=====  ==========  =========
batch  serve CPU   p99
=====  ==========  =========
1      77 %        -21 ms (answered before the key is let go)
2      48-52 %     -3 to -6 ms
3      39-53 %     16-29 ms
4      34-48 %     39-55 ms
5      39 %        69 ms
=====  ==========  =========

That was before each raise made its private announcement (a REST call, then the
AnnounceUrl fetch served here) and its next-in-line check. With them, 2026-12-03, same
bench and load, hands timed by their queue score:

=============  =========================  ==============================
streams        batch 4                    batch 3
=============  =========================  ==============================
250            8.9-9.9 % CPU, p99 41-42   11.0 %, p99 15 ms
1000           27-30 %, p99 86-138 ms     27-30 %, p99 66-85 ms
=============  =========================  ==============================

Hence the default, "auto" (:func:`read_batch`): 4, and 3 in a process holding
:data:`AUTO_BATCH_STREAMS` streams or more.

``--workers N`` runs N such processes, each with its own ``SO_REUSEPORT`` socket on the
same port (the kernel spreads connections); every process reads every room's events from
Redis, as one does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import gc
import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart

from ..config import Settings
from ..metrics import app_metrics
from ..web.security import SECURITY_HEADERS
from . import fastannounce
from ._wsread import Reader
from .media import MediaHub, MediaStream, media_hub
from .security import websocket_signature_valid

log = logging.getLogger(__name__)

MEDIA_PATH = "/voice/stream"
PEEK_BYTES = 2048
"""Bytes of a new connection read ahead (not consumed) to find its request line."""
FIRST_LINE_TIMEOUT_S = 10.0
"""A connection that sends no request line (a media stream: no whole upgrade request) in
this time is closed."""
MAX_HEAD_BYTES = 8192
"""Longest upgrade request of a media stream (431 beyond)."""
MAX_MESSAGE_BYTES = 64 * 1024
"""Longest WebSocket message taken (a media message is about 330 bytes); a longer one is
skipped (and counted) and the stream goes on."""
CLOSE_WAIT_S = 5.0
"""After our close frame: longest wait for the peer's before the socket is closed."""
STOP_CLOSE_WAIT_S = 2.0
"""At shutdown: longest wait for the peers' close frames, over all streams."""
REFUSED_LINGER_S = 1.0
"""After a refused upgrade's answer: longest time the rest of the peer's bytes are read and
dropped, so that closing with them unread (a reset) does not destroy the answer."""
GRACEFUL_S = 5.0
"""At shutdown: longest wait for HTTP requests in flight."""
ACCEPT_PAUSE_S = 1.0
"""Out of file descriptors (or memory) at ``accept``: how long accepting pauses. The
listener stays readable, so going on would spin; connections wait in its backlog."""
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class _BadUpgrade(Exception):
    """An upgrade request refused: the HTTP status, its reason phrase and body."""

    def __init__(self, status: int, phrase: str, body: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(body)
        self.status, self.phrase, self.body, self.headers = status, phrase, body, headers

    def response(self) -> bytes:
        body = self.body.encode()
        head = [f"HTTP/1.1 {self.status} {self.phrase}", "Content-Type: text/plain",
                f"Content-Length: {len(body)}", "Connection: close",
                *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def upgrade_response(head: bytes, settings: Settings) -> bytes:
    """The 101 answer to a media stream's upgrade request ``head`` (through its blank line).

    Raises
    ------
    _BadUpgrade
        400 if it is not a WebSocket upgrade, 426 for another protocol version, 404 for
        another path, 403 if ``X-Twilio-Signature`` does not validate.
    """
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    if method != "GET" or version != "HTTP/1.1":
        raise _BadUpgrade(400, "Bad Request", "Bad Request: a WebSocket upgrade is a GET over HTTP/1.1.\n")
    if path != MEDIA_PATH:
        raise _BadUpgrade(404, "Not Found", "Not found.\n")
    key = headers.get("sec-websocket-key", "")
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    try:
        key_ok = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        key_ok = False
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection or not key_ok:
        raise _BadUpgrade(400, "Bad Request", "Bad Request: this is a WebSocket endpoint "
                          "(Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Key).\n")
    if headers.get("sec-websocket-version") != "13":
        raise _BadUpgrade(426, "Upgrade Required", "Upgrade Required: WebSocket version 13.\n",
                          (("Sec-WebSocket-Version", "13"),))
    if not websocket_signature_valid(settings, path, query, headers.get("x-twilio-signature", "")):
        log.warning("refused websocket %s: missing or invalid X-Twilio-Signature", path)
        raise _BadUpgrade(403, "Forbidden", "Forbidden: invalid Twilio signature.\n")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's close frame (unmasked): ``code`` and up to 123 bytes of ``reason``."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload


class _Conn:
    """One media socket read by the process's :class:`MediaSockets`."""

    __slots__ = ("closing", "handle", "owner", "slot", "sock", "stream", "tails")

    def __init__(self, owner: MediaSockets, sock: socket.socket, handle: int) -> None:
        self.owner = owner
        self.sock = sock
        self.handle = handle
        self.stream: MediaStream | None = None
        self.tails: tuple[bytes, ...] = ()
        #: The stream's row in the keypad bank's queues, which the reader fills, or -1.
        self.slot = -1
        #: When our close frame went out (loop time), or None.
        self.closing: float | None = None

    def messages(self, messages: list[bytes]) -> None:
        stream = self.stream
        assert stream is not None
        for message in messages:
            stream.on_message(message)
        reader = stream.reader
        tails = reader.tails if reader.state == "started" else ()
        if tails != self.tails:  # the start named its stream; a stop ends the fast path
            self.tails = tails
            self._fast()

    def slot_changed(self, slot: int | None) -> None:
        """The stream got its slot in the keypad bank, or is about to free it."""
        self.slot = -1 if slot is None else slot
        self._fast()

    def _fast(self) -> None:
        if self.handle >= 0:
            self.owner.reader.fast(self.handle, self.tails, self.slot if self.tails else -1)

    def close(self, code: int, reason: str) -> None:
        """Send our close frame; the socket closes at the peer's (or after CLOSE_WAIT_S)."""
        if self.closing is not None or self.handle < 0:
            return
        self.closing = self.owner.loop.time()
        with contextlib.suppress(OSError):
            self.sock.send(close_frame(code, reason))
            self.sock.shutdown(socket.SHUT_WR)
        self.owner.reader.closing(self.handle)
        self.owner.closing.add(self)

    def ended(self, end: int) -> None:
        """The reader saw the end: the peer's close code, 0 (end of file) or -code (a protocol error)."""
        if end < 0:
            log.warning("media stream: protocol error from the peer; closing with %d", -end)
            self.close(-end, "protocol error")
        elif end > 0 and self.closing is None:
            self.close(1000 if end == 1005 else end, "")  # echo the peer's close
        if self.stream is not None:
            self.stream.dropped()
        self.release()

    def release(self) -> None:
        """Stop reading the socket and close it."""
        if self.handle < 0:
            return
        owner = self.owner
        owner.reader.remove(self.handle)
        owner.conns.pop(self.handle, None)
        owner.closing.discard(self)
        self.handle = -1
        self.sock.close()


#: With ``HANDRAISE_MEDIA_READ_BATCH=auto`` (the default): the batch below, and from how
#: many open streams of the process on the shorter one (:func:`read_batch`).
AUTO_BATCH_QUIET, AUTO_BATCH_BUSY, AUTO_BATCH_STREAMS = 4, 3, 500


def read_batch(setting: int, streams: int) -> int:
    """Ticks between two reads of the media sockets: ``setting`` (1-5), or for 0 ("auto")
    :data:`AUTO_BATCH_QUIET`, and :data:`AUTO_BATCH_BUSY` once the process holds
    :data:`AUTO_BATCH_STREAMS` streams. A busy process takes longer over each read and each
    press, and every tick of the batch adds up to 20 ms to a key's answer: at 1000 streams
    the shorter batch brought key release -> hand p99 from 86-138 ms to 66-85 ms for no
    CPU that the bench could tell apart (27-30 % of the core either way), while at 250 it
    would cost 10-15 % more CPU to gain latency that was 42 ms already (the table above)."""
    if setting:
        return setting
    return AUTO_BATCH_BUSY if streams >= AUTO_BATCH_STREAMS else AUTO_BATCH_QUIET


class MediaSockets:
    """The media sockets of one process, read together at the :class:`MediaHub`'s tick
    (the hub's :class:`~.media.MediaSource`)."""

    def __init__(self, app: Quart, hub: MediaHub, batch: int) -> None:
        from .webhooks import phone

        self.loop = asyncio.get_running_loop()
        self.svc = phone(app)
        self.hub = hub
        #: ``HANDRAISE_MEDIA_READ_BATCH``; 0 is "auto" (:func:`read_batch`).
        self.batch = max(0, batch)
        self.reader = Reader(MAX_MESSAGE_BYTES)
        self.conns: dict[int, _Conn] = {}
        self.closing: set[_Conn] = set()
        self._since_read = 0
        hub.source = self

    def add(self, sock: socket.socket) -> None:
        """Read ``sock`` (upgraded) from now on, for a new :class:`MediaStream`."""
        conn = _Conn(self, sock, self.reader.add(sock))
        conn.stream = MediaStream(self.svc, self.hub, conn.close)
        conn.stream.on_slot = conn.slot_changed
        self.conns[conn.handle] = conn
        self.hub.ticking()

    def busy(self) -> bool:
        return bool(self.conns)

    def poll(self) -> None:
        """At each tick: read the sockets every :func:`read_batch` ticks."""
        self._since_read += 1
        if self._since_read >= read_batch(self.batch, len(self.conns)):
            self._since_read = 0
            self.read()

    def read(self) -> None:
        """Read every socket that has bytes now; hand what came to the streams."""
        conns, bank = self.conns, self.hub.bank
        # Sockets whose stream has its slot: their media go straight into the bank's
        # queues; what comes back is the rest (start, stop, marks, the odd message, ends).
        for handle, audio, count, messages, end in self.reader.poll(
                bank.audio, bank.fill, bank.frames, bank.dropped):
            conn = conns.get(handle)
            if conn is None:
                continue
            try:
                if audio is not None:
                    conn.stream.on_audio(audio, count)  # type: ignore[union-attr]
                if messages is not None:
                    conn.messages(messages)
            except Exception:  # pragma: no cover - a bug; the other sockets of this read
                # and this socket's end (reported once) must still be handled
                log.exception("media stream: a message could not be handled")
            if end is not None:
                try:
                    conn.ended(end)
                except Exception:  # pragma: no cover - a bug, as above
                    log.exception("media stream: its end could not be handled")
                    conn.release()
        if self.closing:
            late = self.loop.time() - CLOSE_WAIT_S
            for conn in [c for c in self.closing if c.closing is not None and c.closing < late]:
                conn.release()

    async def close_all(self, code: int, reason: str, wait: float) -> None:
        """Close every socket (at shutdown): our close frame, then up to ``wait`` s for theirs."""
        for conn in list(self.conns.values()):
            conn.close(code, reason)
        deadline = self.loop.time() + wait
        while self.conns and self.loop.time() < deadline:
            await asyncio.sleep(0.02)  # the tick may be stopped: read here
            self.read()
        for conn in list(self.conns.values()):
            conn.release()


def _wake_above(conn: socket.socket, have: int) -> None:
    """Let ``conn`` be readable only once it holds more than ``have`` bytes (or at its end).

    Bytes only peeked at keep a socket readable, so waiting for readiness again would wake
    at once, for ever (a peer that sends half a head and stops would make us spin); its end
    wakes us whatever the mark (Linux ``tcp_poll``)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, have + 1)


def _upgrade_length(seen: bytes) -> int | None:
    end = seen.find(b"\r\n\r\n")
    if 0 <= end <= MAX_HEAD_BYTES - 4:
        return end + 4
    if len(seen) >= MAX_HEAD_BYTES:
        raise _BadUpgrade(431, "Request Header Fields Too Large", "Request header fields too large.\n")
    return None


def _take(conn: socket.socket, n: int) -> bytes:
    """Consume the ``n`` bytes just looked at (they are in the socket's buffer)."""
    parts = []
    while n > 0:
        part = conn.recv(n)
        if not part:
            raise ConnectionResetError("the peer went away")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
    """One process serving ``app``: peeks each connection and keeps it (a media stream) or
    hands it to hypercorn."""

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
        #: Media upgrades being read or answered (before their socket joins the reader).
        self.upgrades: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.listeners: list[socket.socket] = []
        #: Connections whose request line is not in yet: their drop timer, and how many
        #: bytes they had sent at the last look.
        self._waiting: dict[socket.socket, tuple[asyncio.TimerHandle, int]] = {}
        self.media: MediaSockets | None = None

    async def start(self, socks: list[socket.socket]) -> None:
        self._lifespan_task = self.loop.create_task(self.lifespan.handle_lifespan())
        await self.lifespan.wait_for_startup()
        if self._lifespan_task.done() and self._lifespan_task.exception() is not None:
            raise self._lifespan_task.exception()  # type: ignore[misc]
        self.media = MediaSockets(self.app, media_hub(self.app), self.settings.media_read_batch)
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
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("serve: accept failed: %s; accepting again in %.0f s",
                                exc, ACCEPT_PAUSE_S)
                    self.loop.remove_reader(lsock.fileno())
                    self.loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting, lsock)
                    return
                log.info("serve: accept failed: %s", exc)  # that connection only
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._watch(conn, FIRST_LINE_TIMEOUT_S)

    def _watch(self, conn: socket.socket, timeout: float) -> None:
        """Wait for ``conn``'s (next) request line, at most ``timeout`` s."""
        timer = self.loop.call_later(timeout, self._drop, conn)
        self._waiting[conn] = (timer, 0)
        self.loop.add_reader(conn.fileno(), self._peek, conn)

    def _resume_accepting(self, lsock: socket.socket) -> None:
        if not self.stopping and lsock.fileno() >= 0:
            self.loop.add_reader(lsock.fileno(), self._accept, lsock)

    def _drop(self, conn: socket.socket) -> None:
        waiting = self._waiting.pop(conn, None)
        if waiting is not None:
            waiting[0].cancel()
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
            timer, had = self._waiting[conn]
            if len(head) <= had:  # woken with nothing new: the peer is gone
                self._drop(conn)
                return
            # Half a request line: wake again on more bytes, or the end.
            self._waiting[conn] = (timer, len(head))
            _wake_above(conn, len(head))
            return
        timer, had = self._waiting.pop(conn)
        timer.cancel()
        self.loop.remove_reader(conn.fileno())
        if had:
            _wake_above(conn, 0)
        if _is_media_request(head):
            upgrade = self.loop.create_task(self._media(conn))
            self.upgrades.add(upgrade)
            upgrade.add_done_callback(self.upgrades.discard)
            return
        if fastannounce.is_fixed_announcement(head):
            task = self.loop.create_task(self._announcement(conn))
        else:
            task = self.loop.create_task(self._http(conn))
        self.http_tasks.add(task)
        task.add_done_callback(self.http_tasks.discard)

    async def _media(self, conn: socket.socket) -> None:
        """A media stream's upgrade: answered here, then the socket goes to the reader."""
        assert self.media is not None
        handed = False
        try:
            try:
                head = await self._upgrade_head(conn)
                if head is None:
                    return
                response = upgrade_response(head, self.settings)
            except _BadUpgrade as refused:
                await self._answer_and_close(conn, refused.response())
                return
            await self.loop.sock_sendall(conn, response)
            if not self.stopping:  # else the media sockets are being closed already
                self.media.add(conn)
                handed = True
        except OSError:
            pass
        finally:
            if not handed:
                conn.close()

    async def _upgrade_head(self, conn: socket.socket) -> bytes | None:
        """The whole upgrade request (consumed, nothing after it), or None if the peer
        went away or sent none in time."""
        seen = await self._peek_whole(conn, _upgrade_length)
        return None if seen is None else _take(conn, len(seen))

    async def _peek_whole(self, conn: socket.socket,
                          length: Callable[[bytes], int | None]) -> bytes | None:
        """The request at the start of ``conn``, looked at and not consumed, once
        ``length(seen)`` says how long it is and that much is in; None if the peer went
        away or did not send it in time. ``length`` returns None while it cannot tell
        and raises to refuse."""
        deadline = self.loop.time() + FIRST_LINE_TIMEOUT_S
        had = 0
        try:
            while True:
                try:
                    seen = conn.recv(MAX_HEAD_BYTES + fastannounce.MAX_REQUEST_BYTES,
                                     socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    seen = None
                if seen == b"":
                    return None
                if seen:
                    need = length(seen)
                    if need is not None and len(seen) >= need:
                        return seen[:need]
                    if len(seen) <= had:  # woken with nothing new: the peer is gone
                        return None
                    # Part of it: wake on more bytes, or the end.
                    had = len(seen)
                    _wake_above(conn, had)
                readable = self.loop.create_future()
                # Readiness is level-triggered: this may run again before we are woken.
                self.loop.add_reader(conn.fileno(), _resolve, readable)
                try:
                    await asyncio.wait_for(readable, max(0.0, deadline - self.loop.time()))
                except TimeoutError:
                    return None
                finally:
                    self.loop.remove_reader(conn.fileno())
        finally:
            if had:
                _wake_above(conn, 0)

    async def _announcement(self, conn: socket.socket) -> None:
        """Twilio fetching a fixed announcement: answered here (:mod:`.fastannounce`),
        then the connection is looked at again for its next request; any other request
        goes to hypercorn as it came."""
        started = time.perf_counter()
        try:
            try:
                seen = await self._peek_whole(conn, fastannounce.request_length)
                if seen is None:
                    conn.close()
                    return
                fetch = fastannounce.parse(seen)
            except fastannounce.NotHere:
                await self._http(conn)
                return
            _take(conn, fetch.length)
            status, response = fastannounce.answer(fetch, self.settings, SECURITY_HEADERS)
            await self.loop.sock_sendall(conn, response)
        except OSError:
            conn.close()
            return
        metrics = app_metrics(self.app)
        metrics.observe("handraise_http_request_seconds", time.perf_counter() - started,
                        group="voice")
        metrics.count("handraise_http_requests_total", group="voice", status=f"{status // 100}xx")
        if not fetch.keep_alive or self.stopping:
            await self._answer_and_close(conn, b"")  # a lingering close: nothing more is read
            return
        self._watch(conn, self.config.keep_alive_timeout)

    async def _answer_and_close(self, conn: socket.socket, response: bytes) -> None:
        """Answer (a refusal, or nothing more) and close. Closing a socket with input
        unread sends a reset, and a reset can destroy our answer before the peer reads it
        (a 431 leaves most of a head unread): so our side is shut first, and what still
        comes is read and dropped until the peer closes or :data:`REFUSED_LINGER_S` is up."""
        _wake_above(conn, 0)
        try:
            await self.loop.sock_sendall(conn, response)
            conn.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(REFUSED_LINGER_S):
                while await self.loop.sock_recv(conn, 65536):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()

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
        self.stopping = True
        for sock in self.listeners:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for conn in list(self._waiting):
            self._drop(conn)
        for upgrade in list(self.upgrades):
            upgrade.cancel()
        if self.upgrades:
            await asyncio.wait(set(self.upgrades), timeout=1.0)
        hub: MediaHub | None = self.app.extensions.get("handraise_media")
        if hub is not None:
            if hub.open:
                log.info("serve: stopping; finishing %d media streams", len(hub.open))
            await hub.drain()
        if self.media is not None:
            await self.media.close_all(1001, "server stopping", STOP_CLOSE_WAIT_S)
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
    """Serve ``app`` on ``socks`` (HTTP by hypercorn, ``/voice/stream`` here) until
    ``shutdown_trigger`` returns (default: SIGINT or SIGTERM)."""
    loop = asyncio.get_running_loop()
    if shutdown_trigger is None:
        stop = asyncio.Event()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        # A worker of serve_workers starts with them blocked: one that came since is
        # delivered now, to the handler above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
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

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    # Blocked while the workers start (they inherit the mask and unblock once their loop
    # handles the signals): a stop that comes meanwhile is neither lost by a worker nor
    # fatal to this process before it can forward it.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, forward)
        for proc in procs:
            proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    code = 0
    for proc in procs:
        proc.join()
        code = code or (proc.exitcode or 0)
    return code
