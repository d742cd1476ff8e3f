"""Calls and their errors against a real server."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3

import pytest
from conftest import ADMIN, Server

import taskwire


async def test_call_answers_data_and_seq(server: Server) -> None:
    async with taskwire.Client(server.url, ADMIN) as client:  # the http base URL
        assert client.hello is not None and client.hello.role == "admin"
        created = await client.call("task.create", {"title": "Write docs"})
        task = taskwire.Task.from_dict(created.data)
        assert task.title == "Write docs" and task.version == 1
        assert created.seq == client.hello.seq + 1
        same = await client.update(task.id, priority=task.priority)
        assert same.version == 1  # a patch that changes nothing


async def test_refusals_raise_their_class(server: Server) -> None:
    async with taskwire.Client(server.url.replace("http:", "ws:") + "/ws", ADMIN) as client:
        task = taskwire.Task.from_dict((await client.call("task.create", {"title": "t"})).data)
        with pytest.raises(taskwire.ConflictError) as stale:
            await client.update(task.id, if_version=task.version + 1, status="done")
        assert stale.value.code == "conflict" and "version" in stale.value.message
        with pytest.raises(taskwire.NotFoundError):
            await client.finish(999_999)
        with pytest.raises(taskwire.BadRequestError):
            await client.call("task.fly", {})
        with pytest.raises(taskwire.InvalidError):
            await client.call("task.create", {"title": "   "})
        with pytest.raises(taskwire.NotFoundError):
            await client.subscribe("task:999999")
        assert isinstance(stale.value, taskwire.TaskwireError)


async def test_socket_url_forms() -> None:
    assert taskwire.socket_url("http://h:1") == "ws://h:1/ws"
    assert taskwire.socket_url("https://h/base/") == "wss://h/base/ws"
    assert taskwire.socket_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError):
        taskwire.socket_url("ftp://h")


async def test_a_wrong_path_stops_at_start(server: Server) -> None:
    with pytest.raises(taskwire.NotFoundError):
        await taskwire.Client(server.url + "/nothing", ADMIN).start()


async def test_a_bad_token_stops_at_start(server: Server) -> None:
    client = taskwire.Client(server.url, "tw_" + "0" * 64)
    with pytest.raises(taskwire.UnauthorizedError):
        await client.start()
    with pytest.raises(taskwire.UnauthorizedError):
        await client.call("task.create", {"title": "never"})


async def test_rate_limited_calls_are_retried(server_factory) -> None:
    server = server_factory("--calls-per-sec-per-token", "5")
    member = server.make_token("member", "busy-member")
    async with taskwire.Client(server.url, member, busy_base=0.2, busy_cap=1.0) as client:
        refused = await asyncio.gather(
            *(client.call("task.create", {"title": f"once {i}"}, retry=False) for i in range(12)),
            return_exceptions=True,
        )
        limited = [r for r in refused if isinstance(r, taskwire.RateLimitedError)]
        assert limited, "the limit of 5 calls a second was not met"
        results = await asyncio.gather(*(client.call("task.create", {"title": f"retried {i}"}) for i in range(12)))
        assert len({r.data["id"] for r in results}) == 12
    titles = [t["title"] for t in server.rest("GET", "/api/tasks")["items"]]
    assert sorted(t for t in titles if t.startswith("retried")) == sorted(f"retried {i}" for i in range(12))


async def test_unavailable_calls_are_retried(server: Server) -> None:
    """Another process holds the database's write lock past the server's busy
    timeout (2 s): writes are answered `unavailable`, and the client sends them
    again until the lock is gone."""
    retried = asyncio.Event()

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "answered unavailable" in record.getMessage():
                retried.set()

    handler = Retries()
    logging.getLogger("taskwire").addHandler(handler)
    logging.getLogger("taskwire").setLevel(logging.INFO)
    locker = sqlite3.connect(server.db, isolation_level=None)
    try:
        async with taskwire.Client(server.url, ADMIN, busy_base=0.2, busy_cap=0.5) as client:
            locker.execute("BEGIN IMMEDIATE")
            with pytest.raises(taskwire.UnavailableError):
                await client.call("task.create", {"title": "refused"}, retry=False)
            call = asyncio.ensure_future(client.call("task.create", {"title": "retried"}))
            await asyncio.wait_for(retried.wait(), 10)
            assert not call.done()
            locker.execute("ROLLBACK")
            result = await asyncio.wait_for(call, 10)
            assert result.data["title"] == "retried"
    finally:
        locker.close()
        logging.getLogger("taskwire").removeHandler(handler)
    titles = [t["title"] for t in server.rest("GET", "/api/tasks")["items"]]
    assert titles == ["retried"]


async def test_a_start_given_up_leaves_nothing_running() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = taskwire.Client(f"http://127.0.0.1:{port}", ADMIN, backoff_base=0.01, backoff_cap=0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.start(), 0.3)  # it kept retrying until then
    assert client._runner is not None and client._runner.done()
    with pytest.raises(taskwire.ClosedError):
        await client.call("task.create", {"title": "never"})
