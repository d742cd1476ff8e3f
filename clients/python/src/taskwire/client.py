"""The client: one socket, reconnected with backoff; calls re-sent with their
op_id until answered; subscriptions resumed from their last (epoch, seq);
an agent token's heartbeat loop."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import (
    CallTimeoutError,
    ClosedError,
    TaskwireError,
    UnauthorizedError,
    error_from,
)
from .types import CallResult, Event, Hello, Note, Snapshot, Task

log = logging.getLogger("taskwire")

# Refusals that say "later", not "no": the client sends the frame again itself.
RETRIED = ("unavailable", "rate_limited")


def new_op_id() -> str:
    """A random op_id (the server allows 1 to 100 characters)."""
    return "py-" + secrets.token_hex(12)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    return random.uniform(0, min(cap, base * 2**attempt))


def socket_url(url: str) -> str:
    """`http(s)://host:port[/]` becomes `ws(s)://host:port/ws`; a `ws(s)://` URL
    is used as given."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _Call:
    """A call waiting for its reply; sent again, unchanged, on every new socket."""

    def __init__(self, method: str, params: dict[str, Any], op_id: str, retry: bool) -> None:
        self.frame = {"type": "call", "method": method, "params": params, "op_id": op_id}
        self.future: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self.retry = retry
        self.attempt = 0
        self.sent_on: int | None = None  # the socket it was last sent on
        self.timer: asyncio.TimerHandle | None = None


_END = object()  # queued last: the subscription is over


class Subscription:
    """One topic. Iterate it (`async for item in sub`) for `Snapshot` and `Event`
    items, or give `subscribe` callbacks. `epoch` and `since` are the position
    of the last change received."""

    def __init__(
        self,
        client: Client,
        topic: str,
        on_snapshot: Callable[[Snapshot], Any] | None,
        on_event: Callable[[Event], Any] | None,
        epoch: str | None,
        since: int | None,
        history: int | None,
    ) -> None:
        self.client = client
        self.topic = topic
        self.epoch = epoch
        self.since = since
        self.history = history
        self.error: BaseException | None = None
        self._on_snapshot = on_snapshot
        self._on_event = on_event
        self._live = False  # the subscribe on the current socket was answered
        self._has_state = False  # a snapshot or a position was delivered
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None  # a retry after `rate_limited` / `unavailable`
        self._sent_on: int | None = None  # the socket it was last sent on
        self._attempt = 0
        self._ended = False
        self._runner: asyncio.Task[None] | None = None
        if on_snapshot is not None or on_event is not None:
            # Callbacks run in a task of their own, in order, so one may await
            # client calls while the client goes on reading replies.
            self._runner = asyncio.create_task(self._run_callbacks())

    def __aiter__(self) -> AsyncIterator[Snapshot | Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Snapshot | Event]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # for any other reader
                if self.error is not None:
                    raise self.error
                return
            yield item

    async def _run_callbacks(self) -> None:
        try:
            await self._call_back()
        except TaskwireError:
            pass  # the subscription or the client ended with it; `error` and wait_closed() tell

    async def _call_back(self) -> None:
        async for item in self:
            try:
                if isinstance(item, Snapshot):
                    result = self._on_snapshot(item) if self._on_snapshot else None
                else:
                    result = self._on_event(item) if self._on_event else None
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a callback of topic %s raised", self.topic)

    async def unsubscribe(self) -> None:
        """No more items after this; the iterator ends."""
        self.client._subs.pop(self.topic, None)
        self._end(None)
        await self.client._send({"type": "unsubscribe", "ref": self.client._new_ref(), "topic": self.topic})

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.error = error
        if self._timer:
            self._timer.cancel()
        if not self._first.done():
            if error is not None:
                self._first.set_exception(error)
            else:
                self._first.set_result(None)
        self._queue.put_nowait(_END)

    def _subscribe_frame(self, ref: int) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "ref": ref, "topic": self.topic}
        if self.epoch is not None and self.since is not None:
            frame.update(epoch=self.epoch, since=self.since)
        if self.history is not None:
            frame["history"] = self.history
        return frame

    def _on_reply(self, frame: dict[str, Any]) -> None:
        if self._ended:
            return
        if not frame.get("ok"):
            error = error_from(frame.get("error") or {})
            if error.code in RETRIED:
                delay = backoff_delay(self._attempt, self.client.busy_base, self.client.busy_cap)
                self._attempt += 1
                self._sent_on = None
                self._timer = asyncio.get_running_loop().call_later(
                    delay, lambda: asyncio.ensure_future(self.client._send_subscribe(self))
                )
                return
            self.client._subs.pop(self.topic, None)
            self._end(error)
            return
        self._attempt = 0
        data = frame["data"]
        if "snapshot" in data:
            self._queue.put_nowait(
                Snapshot(
                    topic=self.topic,
                    data=data["snapshot"],
                    epoch=data["epoch"],
                    seq=data["seq"],
                    resync=self._has_state,
                    history=data.get("history"),
                )
            )
            self.since = data["seq"]
        else:
            for raw in data.get("events", []):
                self._deliver(raw, replayed=True)
            self.since = max(self.since or 0, data["seq"])
        self.epoch = data["epoch"]
        self._has_state = True
        self._live = True
        if not self._first.done():
            self._first.set_result(None)

    def _deliver(self, frame: dict[str, Any], replayed: bool = False) -> None:
        seq = frame.get("seq")
        if seq is not None:
            if self.since is not None and seq <= self.since:
                return  # already delivered
            self.since = seq
        self._queue.put_nowait(Event.from_frame(frame, replayed=replayed))


class Client:
    """A taskwire client.

    `url` is the server's base URL (`http://host:8080`) or its socket URL
    (`ws://host:8080/ws`). Use it as `async with Client(url, token) as client:`,
    or `await client.start()` and `await client.close()`.

    With an agent token (hello `role` is `agent`), the client heartbeats every
    third of the server's `agent_timeout_ms` while connected, for the agent of
    hello's `agent_id` (or `agent_id` given here, for servers that do not send
    it), adding `heartbeat_fields` (for example `{"status": "busy"}`) to each.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        agent_id: int | None = None,
        heartbeat: bool = True,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        busy_base: float = 0.25,
        busy_cap: float = 5.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = socket_url(url)
        self.token = token
        self.heartbeat_fields: dict[str, Any] = {}
        self.hello: Hello | None = None
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.busy_base, self.busy_cap = busy_base, busy_cap
        self._agent_id = agent_id
        self._heartbeat = heartbeat
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._socket_no = 0
        self._refs = itertools.count(1)
        self._waiting: dict[int, Any] = {}  # ref -> _Call or Subscription, on the current socket
        self._calls: set[_Call] = set()
        self._subs: dict[str, Subscription] = {}
        self._runner: asyncio.Task[None] | None = None
        self._connected: asyncio.Event | None = None
        self._done: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> Self:
        """Connects, and returns once the first `hello` came. Raises
        `UnauthorizedError` for a bad or revoked token (any HTTP 4xx refusal
        stops the client: a wrong URL is `NotFoundError`); other failures
        are retried with backoff."""
        if self._runner is not None:
            raise RuntimeError("the client is already started")
        self._connected = asyncio.Event()
        self._done = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run())
        hello: asyncio.Future[Any] = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait([hello, self._done], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (a timeout around start()): leave nothing running
            await self.close()
            raise
        finally:
            hello.cancel()
        if self._done.done():
            self._done.result()  # raises what stopped it
        return self

    async def close(self) -> None:
        """Closes the socket (code 1000) and stops; waiting calls raise `ClosedError`."""
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        self._stop(None)

    async def wait_closed(self) -> None:
        """Returns when the client was closed; raises what stopped it otherwise
        (`UnauthorizedError` when its token was revoked)."""
        if self._done is None:
            raise RuntimeError("the client is not started")
        await asyncio.shield(self._done)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def agent_id(self) -> int | None:
        """The agent this token acts as (agent tokens only)."""
        if self.hello is not None and self.hello.agent_id is not None:
            return self.hello.agent_id
        return self._agent_id

    # -- calls -------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        op_id: str | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> CallResult:
        """Sends a call and returns its result once committed.

        Its op_id (`op_id`, else a random one) goes with it every time it is
        sent: after a drop it is sent again on the next socket, and the server
        answers a repeat without committing twice. `unavailable` and
        `rate_limited` are retried with jittered backoff (unless `retry` is
        False); other refusals raise their `TaskwireError` subclass.
        """
        self._check_running()
        call = _Call(method, params or {}, op_id or new_op_id(), retry)
        self._calls.add(call)
        try:
            await self._send_call(call)
            if timeout is None:
                return await call.future
            try:
                return await asyncio.wait_for(asyncio.shield(call.future), timeout)
            except TimeoutError:
                raise CallTimeoutError(f"no reply to {method} within {timeout} s") from None
        finally:
            self._calls.discard(call)
            if call.timer:
                call.timer.cancel()

    async def _send_call(self, call: _Call) -> None:
        if call.timer:
            call.timer.cancel()
            call.timer = None
        if call.future.done() or call.sent_on == self._socket_no or self._ws is None:
            return  # answered, already on this socket, or waiting for one
        call.sent_on = self._socket_no
        ref = self._new_ref()
        self._waiting[ref] = call
        await self._send({**call.frame, "ref": ref})

    def _call_reply(self, call: _Call, frame: dict[str, Any]) -> None:
        if call.future.done():
            return
        if frame.get("ok"):
            call.future.set_result(CallResult(frame.get("data"), frame.get("seq")))
            return
        error = error_from(frame.get("error") or {})
        if call.retry and error.code in RETRIED:
            delay = backoff_delay(call.attempt, self.busy_base, self.busy_cap)
            call.attempt += 1
            call.sent_on = None
            log.info("%s answered %s; sending it again in %.2f s", call.frame["method"], error.code, delay)
            call.timer = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._send_call(call))
            )
            return
        call.future.set_exception(error)

    # -- subscriptions -----------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        on_snapshot: Callable[[Snapshot], Any] | None = None,
        on_event: Callable[[Event], Any] | None = None,
        *,
        epoch: str | None = None,
        since: int | None = None,
        history: int | None = None,
    ) -> Subscription:
        """Subscribes to `topic` and returns once the first reply came (raising
        its error: `NotFoundError`, `BadRequestError`, ...).

        With callbacks, `on_snapshot(Snapshot)` gets the state and
        `on_event(Event)` each change, in seq order, never twice; they may be
        coroutine functions. Without, iterate the returned subscription. After
        a drop it resumes from its last position; a new `Snapshot` (with
        `resync=True`) comes only when the server sent one. Give `epoch` and
        `since` to resume from a position saved earlier.
        """
        self._check_running()
        if topic in self._subs:
            raise ValueError(f"already subscribed to {topic!r}")
        sub = Subscription(self, topic, on_snapshot, on_event, epoch, since, history)
        self._subs[topic] = sub
        await self._send_subscribe(sub)
        await sub._first
        return sub

    async def _send_subscribe(self, sub: Subscription) -> None:
        if sub._timer:
            sub._timer.cancel()
            sub._timer = None
        if sub._ended or sub._sent_on == self._socket_no or self._ws is None or self._subs.get(sub.topic) is not sub:
            return  # over, already on this socket, or waiting for one
        sub._sent_on = self._socket_no
        ref = self._new_ref()
        self._waiting[ref] = sub
        await self._send(sub._subscribe_frame(ref))

    # -- the job -------------------------------------------------------------

    async def claim(self, task_id: int, *, op_id: str | None = None) -> Task:
        """Takes an unassigned task for this agent (`task.claim`): assigned to
        it, `in_progress`. `ConflictError` if another agent has it."""
        result = await self.call("task.claim", {"id": task_id}, op_id=op_id)
        return Task.from_dict(result.data)

    async def update(
        self, task_id: int, *, if_version: int | None = None, op_id: str | None = None, **fields: Any
    ) -> Task:
        """`task.update` with `fields` as the patch (`status`, `progress`, ...)."""
        params: dict[str, Any] = {"id": task_id, "patch": fields}
        if if_version is not None:
            params["if_version"] = if_version
        result = await self.call("task.update", params, op_id=op_id)
        return Task.from_dict(result.data)

    async def note(self, task_id: int, text: str, progress: int | None = None, *, op_id: str | None = None) -> Note:
        """Adds a note to the task (`task.note`), setting its progress too if given."""
        params: dict[str, Any] = {"id": task_id, "text": text}
        if progress is not None:
            params["progress"] = progress
        result = await self.call("task.note", params, op_id=op_id)
        return Note.from_dict(result.data)

    async def progress(self, task_id: int, pct: int | None, *, op_id: str | None = None) -> Task:
        """Sets the task's progress, 0 to 100 (None clears it)."""
        return await self.update(task_id, progress=pct, op_id=op_id)

    async def finish(self, task_id: int, *, op_id: str | None = None) -> Task:
        """Sets the task's status to `done`."""
        return await self.update(task_id, status="done", op_id=op_id)

    async def heartbeat(self, **fields: Any) -> None:
        """Heartbeats now (agent tokens). `fields` (`status`, `current_task_id`)
        are kept in `heartbeat_fields` and go with every later beat too, so the
        loop keeps reporting them."""
        agent_id = self.agent_id
        if agent_id is None:
            raise ValueError("no agent_id: not an agent token, or give Client(agent_id=...)")
        self.heartbeat_fields.update(fields)
        await self.call("agent.heartbeat", {"id": agent_id, **self.heartbeat_fields})

    # -- the connection ------------------------------------------------------

    def _new_ref(self) -> int:
        return next(self._refs)

    def _check_running(self) -> None:
        if self._done is None:
            raise RuntimeError("start the client first (await client.start(), or async with)")
        if self._done.done():
            error = self._done.exception()
            raise error if error is not None else ClosedError("the client is closed")

    async def _send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed:
            pass  # the reader sees it too; what is unanswered goes again on the next socket

    async def _run(self) -> None:
        attempt = 0
        while True:
            fatal: TaskwireError | None = None
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=self._open_timeout,
                    max_size=None,  # a snapshot may be large; the server bounds what it sends
                    ping_interval=10,
                    ping_timeout=20,
                ) as ws:
                    try:
                        first = json.loads(await asyncio.wait_for(ws.recv(), self._open_timeout))
                        attempt = 0
                        await self._session(ws, Hello.from_frame(first))
                    finally:
                        self._ws = None
                        self._waiting.clear()
                        for sub in self._subs.values():
                            sub._live = False
                    code, reason = ws.close_code, ws.close_reason
                log.info("disconnected: %s %s", code, reason)
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                reason = e.rcvd.reason if e.rcvd else ""
                log.info("disconnected: %s %s", code, reason)
            except InvalidStatus as e:
                code, reason = None, ""
                status = e.response.status_code
                if 400 <= status < 500 and status not in (408, 429):
                    fatal = _http_error(e)  # a bad token or URL: trying again cannot help
                log.warning("connect refused: HTTP %s", status)
            except (TimeoutError, OSError, InvalidHandshake, ValueError) as e:
                code, reason = None, ""
                log.info("connect failed: %r", e)
            if code == 1008 and reason == "token revoked":
                fatal = UnauthorizedError("token revoked")
            if fatal is not None:
                self._stop(fatal)
                return
            await asyncio.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap))
            attempt += 1

    async def _session(self, ws: ClientConnection, hello: Hello) -> None:
        self._socket_no += 1
        self.hello = hello
        self._ws = ws
        assert self._connected is not None
        self._connected.set()
        heartbeat = None
        agent_id = self.agent_id
        if self._heartbeat and hello.role == "agent":
            if agent_id is None:
                log.warning("an agent token, but no agent_id: give Client(agent_id=...) to heartbeat")
            else:
                heartbeat = asyncio.create_task(self._heartbeat_loop(agent_id, hello.agent_timeout_ms / 3000))
        try:
            for sub in list(self._subs.values()):
                if sub._timer is None:
                    await self._send_subscribe(sub)
            for call in list(self._calls):
                if call.timer is None:
                    await self._send_call(call)
            async for raw in ws:
                self._dispatch(json.loads(raw))
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "reply":
            waiter = self._waiting.pop(frame.get("ref"), None)  # type: ignore[arg-type]
            if isinstance(waiter, _Call):
                self._call_reply(waiter, frame)
            elif isinstance(waiter, Subscription):
                waiter._on_reply(frame)
        elif kind == "event":
            sub = self._subs.get(frame.get("topic", ""))
            if sub is not None and sub._live:
                sub._deliver(frame)
        elif kind == "error":
            log.warning("error frame from the server: %s", frame.get("error"))

    async def _heartbeat_loop(self, agent_id: int, interval: float) -> None:
        while True:
            try:
                await self.call("agent.heartbeat", {"id": agent_id, **self.heartbeat_fields}, timeout=interval * 2)
            except (TimeoutError, TaskwireError) as e:
                log.warning("heartbeat failed: %r", e)
            await asyncio.sleep(interval)

    def _stop(self, error: TaskwireError | None) -> None:
        """Ends every waiting call and subscription with `error` (or ClosedError)."""
        end = error or ClosedError("the client is closed")
        for call in list(self._calls):
            if not call.future.done():
                call.future.set_exception(end)
        for sub in list(self._subs.values()):
            sub._end(error)
        self._subs.clear()
        if self._done is not None and not self._done.done():
            if error is not None:
                self._done.set_exception(error)
                self._done.exception()  # retrieved: wait_closed() raises it if anyone asks
            else:
                self._done.set_result(None)


def _http_error(e: InvalidStatus) -> TaskwireError:
    """The server's JSON error body of a refused upgrade."""
    try:
        body = json.loads(e.response.body or b"{}")
        return error_from(body.get("error") or {})
    except (ValueError, AttributeError):
        return TaskwireError(f"HTTP {e.response.status_code}", "http_" + str(e.response.status_code))
