"""Agent tokens: the heartbeat loop, and revocation (close 1008) stopping the client."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ADMIN, Collector, Server

import taskwire


async def test_heartbeats_run_with_the_client(server_factory) -> None:
    server = server_factory("--heartbeat-timeout", "2")  # a beat every 0.67 s
    agent_id, token, _ = server.make_agent("beater")
    seen = Collector()
    async with taskwire.Client(server.url, ADMIN) as admin:
        await admin.subscribe(f"agent:{agent_id}", seen.on_snapshot, seen.on_event)
        beats = lambda: [e for e in seen.events if e.event == "agent.heartbeat"]
        async with taskwire.Client(server.url, token, agent_id=agent_id) as agent:
            agent.heartbeat_fields = {"status": "busy"}
            await seen.wait_for(lambda: len(beats()) >= 3, timeout=5)
            statuses = [e.data["status"] for e in seen.events if e.event == "agent.updated"]
            assert "offline" not in statuses and statuses[-1] == "busy"
        # Closed: no more heartbeats, so the server sets the agent offline.
        n = len(beats())
        await seen.wait_for(
            lambda: any(e.event == "agent.updated" and e.data["status"] == "offline" for e in seen.events),
            timeout=8,
        )
        assert len(beats()) == n


async def test_revocation_stops_the_client(server: Server) -> None:
    agent_id, token, token_id = server.make_agent("doomed")
    async with taskwire.Client(server.url, ADMIN) as admin:
        task = (await admin.call("task.create", {"title": "t", "assignee_id": agent_id})).data
    client = taskwire.Client(server.url, token, agent_id=agent_id, backoff_base=0.01, backoff_cap=0.05)
    await client.start()
    sub = await client.subscribe("tasks")
    await client.update(task["id"], status="in_progress")

    await asyncio.to_thread(server.rest, "DELETE", f"/api/tokens/{token_id}")  # the socket closes 1008
    with pytest.raises(taskwire.UnauthorizedError):
        await asyncio.wait_for(client.wait_closed(), 10)
    assert not client.connected
    with pytest.raises(taskwire.UnauthorizedError):
        await client.update(task["id"], status="done")
    with pytest.raises(taskwire.UnauthorizedError):
        async for _ in sub:
            pass
    await client.close()
