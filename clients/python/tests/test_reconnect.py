"""Reconnecting: across a server restart, across cut sockets, and a reply lost
after the call committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import ADMIN, Collector, Server

import taskwire


def contiguous(seqs: list[int], first: int, last: int) -> bool:
    return seqs == list(range(first, last + 1))


async def test_restart_resumes_and_resends(server: Server) -> None:
    seen = Collector()
    async with taskwire.Client(server.url, ADMIN, backoff_base=0.05, backoff_cap=0.5) as client:
        await client.subscribe("tasks", seen.on_snapshot, seen.on_event)
        for i in range(3):
            await client.call("task.create", {"title": f"before {i}"})
        await seen.wait_for(lambda: len(seen.events) == 3)

        # Calls made while the server stops (answered `unavailable`, or lost with
        # the socket) and while it is down all commit once it is back.
        during = [asyncio.ensure_future(client.call("task.create", {"title": f"during {i}"})) for i in range(5)]
        await asyncio.to_thread(server.restart)  # SIGTERM: close 1001; same port, same file
        during += [asyncio.ensure_future(client.call("task.create", {"title": f"during {i}"})) for i in range(5, 10)]
        done = await asyncio.wait_for(asyncio.gather(*during), 10)
        head = max(r.seq for r in done)
        await seen.wait_for(lambda: seen.seqs and seen.seqs[-1] == head)

    first = seen.snapshots[0].seq
    assert len(seen.snapshots) == 1, "a resume within the log must not send a new snapshot"
    assert contiguous(seen.seqs, first + 1, head)
    titles = sorted(t["title"] for t in server.rest("GET", "/api/tasks")["items"])
    assert titles == sorted([f"before {i}" for i in range(3)] + [f"during {i}" for i in range(10)])


async def test_cut_sockets_lose_and_repeat_nothing(server: Server, proxy_factory) -> None:
    proxy = await proxy_factory(server.port)
    seen = Collector()
    async with (
        taskwire.Client(proxy.url, ADMIN, backoff_base=0.02, backoff_cap=0.1) as reader,
        taskwire.Client(server.url, ADMIN) as writer,
    ):
        await writer.call("task.create", {"title": "already there"})
        sub = await reader.subscribe("tasks", seen.on_snapshot, seen.on_event)
        await seen.wait_for(lambda: len(seen.snapshots) == 1)
        start = seen.snapshots[0].seq
        head = start
        for round_ in range(6):
            results = await asyncio.gather(
                *(writer.call("task.create", {"title": f"r{round_} t{i}"}) for i in range(20))
            )
            head = max(head, *(r.seq for r in results))
            proxy.cut()  # no close frame: the reader notices, reconnects, resumes
        await seen.wait_for(lambda: seen.seqs and seen.seqs[-1] == head)
        assert proxy.connections >= 4, "the cuts did not force reconnects"
        assert sub.since == head

    assert len(seen.snapshots) == 1
    assert contiguous(seen.seqs, start + 1, head), "an event was lost or repeated"
    assert any(e.replayed for e in seen.events), "nothing was caught up by a resume"


async def test_dropped_reply_commits_once(server: Server, proxy_factory) -> None:
    proxy = await proxy_factory(server.port)
    seen = Collector()
    async with (
        taskwire.Client(proxy.url, ADMIN, backoff_base=0.02, backoff_cap=0.1) as client,
        taskwire.Client(server.url, ADMIN) as watcher,
    ):
        await watcher.subscribe("tasks", seen.on_snapshot, seen.on_event)
        proxy.hold = True  # the server's replies go nowhere
        call = asyncio.ensure_future(client.call("task.create", {"title": "exactly once"}))
        await seen.wait_for(lambda: len(seen.events) == 1)  # it committed
        assert not call.done()
        proxy.hold = False
        proxy.cut()  # the client re-sends it on the next socket, with the same op_id
        result = await asyncio.wait_for(call, 10)

    committed = seen.events[0]
    assert result.seq == committed.seq and result.data["id"] == committed.data["id"]
    titles = [t["title"] for t in server.rest("GET", "/api/tasks")["items"]]
    assert titles.count("exactly once") == 1
    assert proxy.connections == 2


async def test_another_database_sends_a_new_snapshot(server: Server) -> None:
    seen = Collector()
    async with taskwire.Client(server.url, ADMIN, backoff_base=0.05, backoff_cap=0.5) as client:
        await client.subscribe("tasks", seen.on_snapshot, seen.on_event)
        await client.call("task.create", {"title": "in the old file"})
        await seen.wait_for(lambda: len(seen.events) == 1)
        old_epoch = seen.snapshots[0].epoch

        await asyncio.to_thread(server.stop)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{server.db}{suffix}").unlink(missing_ok=True)
        await asyncio.to_thread(server.start, server.port)  # a new file: a new epoch

        await seen.wait_for(lambda: len(seen.snapshots) == 2)
        resync = seen.snapshots[1]
        assert resync.resync and resync.epoch != old_epoch and resync.data == []
        created = await client.call("task.create", {"title": "in the new file"})
        await seen.wait_for(lambda: len(seen.events) == 2)
        assert seen.events[1].seq == created.seq == 1


async def test_resume_from_a_saved_position(server: Server) -> None:
    async with taskwire.Client(server.url, ADMIN) as client:
        sub = await client.subscribe("tasks")
        await client.call("task.create", {"title": "seen"})
        async for item in sub:
            if isinstance(item, taskwire.Event):
                break
        saved = (sub.epoch, sub.since)
        await sub.unsubscribe()
        missed = [(await client.call("task.create", {"title": f"missed {i}"})).seq for i in range(3)]

    seen = Collector()
    async with taskwire.Client(server.url, ADMIN) as later:
        await later.subscribe("tasks", seen.on_snapshot, seen.on_event, epoch=saved[0], since=saved[1])
        await seen.wait_for(lambda: len(seen.events) == 3)
    assert seen.snapshots == []
    assert seen.seqs == missed and all(e.replayed for e in seen.events)
