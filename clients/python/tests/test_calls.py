"""Calls and their errors against a real server."""

from __future__ import annotations

import asyncio

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
