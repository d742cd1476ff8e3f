"""An agent: takes free tasks one at a time, reports progress, finishes them."""

import asyncio
import os

import taskwire


async def work(client: taskwire.Client, task: dict) -> None:
    await client.claim(task["id"])  # ours now, in_progress
    await client.heartbeat(status="busy", current_task_id=task["id"])
    for pct in (25, 50, 75):
        await asyncio.sleep(1)  # the actual work goes here
        await client.note(task["id"], f"step {pct // 25} of 4 done", progress=pct)
    await client.finish(task["id"])  # status done
    await client.heartbeat(status="idle", current_task_id=None)


async def main() -> None:
    url, token = os.environ["TASKWIRE_URL"], os.environ["TASKWIRE_TOKEN"]
    async with taskwire.Client(url, token) as client:  # heartbeats while open
        board: dict[int, dict] = {}  # task id -> task, kept live
        async for item in await client.subscribe("tasks"):
            if isinstance(item, taskwire.Snapshot):  # at start, or after a resync
                board = {t["id"]: t for t in item.data}
            elif item.event == "task.deleted":
                board.pop(item.data["id"], None)
            else:
                board[item.data["id"]] = item.data
            free = [t for t in board.values() if t["status"] == "todo" and t["assignee_id"] is None]
            for task in free[:1]:
                try:
                    await work(client, task)
                except (taskwire.ConflictError, taskwire.NotFoundError):
                    pass  # another agent was first, or it was deleted


if __name__ == "__main__":
    asyncio.run(main())
