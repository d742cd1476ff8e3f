"""The job helpers (claim, note, progress, finish) and the README's example agent."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from conftest import ADMIN, Collector, Server

import taskwire

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.py"


async def test_claim_note_progress_finish(server: Server) -> None:
    first_id, first, _ = server.make_agent("first")
    _, second, _ = server.make_agent("second")
    seen = Collector()
    async with (
        taskwire.Client(server.url, ADMIN) as admin,
        taskwire.Client(server.url, first) as a,
        taskwire.Client(server.url, second) as b,
    ):
        assert a.hello and (a.hello.role, a.hello.agent_id, a.hello.name) == ("agent", first_id, "first")
        assert a.agent_id == first_id and a.hello.token_id is not None
        task_id = (await admin.call("task.create", {"title": "the job"})).data["id"]
        await admin.subscribe(f"task:{task_id}", seen.on_snapshot, seen.on_event)

        claimed = await a.claim(task_id)
        assert (claimed.assignee_id, claimed.status) == (first_id, "in_progress")
        assert (await a.claim(task_id)).version == claimed.version  # already ours: no change
        with pytest.raises(taskwire.ConflictError) as taken:
            await b.claim(task_id)
        assert "first" in taken.value.message
        with pytest.raises(taskwire.ForbiddenError):
            await b.note(task_id, "not mine")

        note = await a.note(task_id, "halfway", progress=50)
        assert (note.task_id, note.text, note.progress) == (task_id, "halfway", 50)
        assert (await a.progress(task_id, 80)).progress == 80
        done = await a.finish(task_id)
        assert (done.status, done.progress) == ("done", 80)

        await seen.wait_for(lambda: any(e.task and e.task.status == "done" for e in seen.events))
        noted = [e for e in seen.events if e.event == "task.noted"]
        assert [e.data["text"] for e in noted] == ["halfway"]
        assert noted[0].seq == note.seq and noted[0].by and noted[0].by.get("agent_id") == first_id


async def test_the_example_agent_does_a_task(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    agent_id, token, _ = server.make_agent("example")
    monkeypatch.setenv("TASKWIRE_URL", server.url)
    monkeypatch.setenv("TASKWIRE_TOKEN", token)
    spec = importlib.util.spec_from_file_location("example_agent", EXAMPLE)
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    seen = Collector()
    async with taskwire.Client(server.url, ADMIN) as admin:
        task_id = (await admin.call("task.create", {"title": "for the example"})).data["id"]
        await admin.subscribe(f"task:{task_id}", seen.on_snapshot, seen.on_event)
        agent = asyncio.ensure_future(example.main())
        try:
            await seen.wait_for(
                lambda: any(e.task and e.task.status == "done" for e in seen.events) or agent.done(),
                timeout=15,
            )
            if agent.done():
                agent.result()  # raises what stopped it
        finally:
            agent.cancel()
    notes = [e.data["progress"] for e in seen.events if e.event == "task.noted"]
    assert notes == [25, 50, 75]
    final = [e.task for e in seen.events if e.task][-1]
    assert final is not None and (final.status, final.assignee_id) == ("done", agent_id)


def test_the_documented_example_is_this_file() -> None:
    code = EXAMPLE.read_text().split("\n", 2)[2]  # without its docstring and blank line
    for doc in (EXAMPLE.parents[1] / "README.md", EXAMPLE.parents[3] / "docs" / "agents.md"):
        assert f"```python\n{code}```" in doc.read_text(), f"{doc} differs from {EXAMPLE}"
