"""The protocol's entities and frames as dataclasses.

Each keeps the fields this client knows; fields a newer server adds are kept in
`extra`, so an upgrade of the server never breaks `from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

TaskStatus = Literal["todo", "in_progress", "blocked", "review", "done"]
AgentStatus = Literal["idle", "busy", "error", "offline"]

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and k != "extra"}
    extra = {k: v for k, v in data.items() if k not in names}
    return cls(**known, extra=extra)  # type: ignore[call-arg]


@dataclass
class Task:
    id: int
    title: str
    description: str = ""
    status: TaskStatus = "todo"
    priority: int = 0
    assignee_id: int | None = None
    progress: int | None = None
    version: int = 0
    created_at: str = ""
    updated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return _build(cls, data)


@dataclass
class Agent:
    id: int
    name: str
    status: AgentStatus = "idle"
    current_task_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    last_heartbeat_at: str | None = None
    version: int = 0
    created_at: str = ""
    updated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Agent:
        return _build(cls, data)


@dataclass
class Note:
    """A note on a task: its text, the progress it reported, and (from an
    activity entry) its `seq`, author `by` and time `at`."""

    task_id: int
    text: str
    progress: int | None = None
    seq: int | None = None
    by: dict[str, Any] | None = None
    at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Note:
        """From an activity entry (`task.note`'s reply, a `history` item) or
        from the `data` of a `task.noted` event."""
        if isinstance(data.get("data"), dict):  # an entry: the note is its `data`
            data = {**{k: v for k, v in data.items() if k != "data"}, **data["data"]}
        return _build(cls, data)


@dataclass
class Event:
    """An event frame of a subscribed topic.

    `data` is the whole entity after the change (`{"id": N}` for a delete, the
    note for `task.noted`, `{"id", "at"}` for `agent.heartbeat`). `seq` is None
    only for heartbeats. `replayed` is true for the changes a resume caught up
    on. `by`, `before` and `at` come from servers with authored changes.
    """

    topic: str
    event: str
    data: dict[str, Any]
    seq: int | None = None
    changed: list[str] | None = None
    by: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    at: str | None = None
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: dict[str, Any], replayed: bool = False) -> Event:
        body = {k: v for k, v in frame.items() if k != "type"}
        event = _build(cls, body)
        event.replayed = replayed
        return event

    @property
    def task(self) -> Task | None:
        """The task after a `task.created` / `task.updated` change."""
        if self.event in ("task.created", "task.updated"):
            return Task.from_dict(self.data)
        return None

    @property
    def agent(self) -> Agent | None:
        """The agent after an `agent.created` / `agent.updated` change."""
        if self.event in ("agent.created", "agent.updated"):
            return Agent.from_dict(self.data)
        return None


@dataclass
class Snapshot:
    """A fresh state of a topic: replace everything held for it.

    `data` is a list of dicts (`tasks`, `agents`) or one dict (`task:N`,
    `agent:N`); `resync` is true when it replaces an earlier state after a
    drop (another database, a position too old, too much to replay).
    """

    topic: str
    data: Any
    epoch: str
    seq: int
    resync: bool = False
    history: list[dict[str, Any]] | None = None


@dataclass
class CallResult:
    """A successful call: the method's `data`, and the `seq` of its last change
    (None when nothing changed)."""

    data: Any
    seq: int | None = None


@dataclass
class Hello:
    """The server's first frame on each socket."""

    epoch: str
    seq: int
    role: str
    heartbeat_ms: int
    agent_timeout_ms: int
    server: str = ""
    stuck_after_ms: int | None = None
    token_id: int | None = None
    name: str | None = None
    agent_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Hello:
        return _build(cls, {k: v for k, v in frame.items() if k != "type"})
