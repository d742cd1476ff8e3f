//! Filtered collection topics (`tasks?status=done`, `agents?status=busy,idle`):
//! the filter, its one canonical spelling, and what a committed change is on
//! a filtered topic (`created`, `entered`, `updated`, `left`, `deleted` or
//! nothing). The live path (the Registry) and the replay path (a resume) both
//! call [`Filter::event_of`], so a replay yields the events the live path sent.
//!
//! Whether an entity matched before a change is read from the change itself:
//! its `data` (the entity after) overlaid with its `before` (the previous
//! values of the fields it changed; for a delete, the whole entity).

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::fmt;

use crate::error::ApiError;
use crate::model::{AgentStatus, ChangeKind, Entity, TaskStatus};
use crate::protocol::{Change, Topic};

/// Who a task filter wants as assignee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignee {
    None,
    Id(i64),
}

/// A filter on a collection, in canonical form: statuses sorted by spelling,
/// without repeats, never empty nor all of them; a `priority_min` of 1 to 3.
/// A task filter with a `window` is a window topic: the first `limit`
/// matching tasks by `order` (see [`crate::db::windows`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    Tasks {
        status: Vec<TaskStatus>,
        assignee: Option<Assignee>,
        priority_min: Option<i32>,
        window: Option<Window>,
    },
    Agents {
        status: Vec<AgentStatus>,
    },
}

/// The most tasks a window (or a REST page) holds.
pub const MAX_LIMIT: u32 = 500;

/// A window: the first `limit` matching tasks by `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub limit: u32,
    pub order: Order,
}

/// The orders of a window or a REST page; ties go by id, in the same
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    UpdatedDesc,
    UpdatedAsc,
    CreatedDesc,
    CreatedAsc,
    PriorityAsc,
    PriorityDesc,
}

impl Order {
    const ALL: [(Order, &'static str); 6] = [
        (Order::UpdatedDesc, "-updated_at"),
        (Order::UpdatedAsc, "updated_at"),
        (Order::CreatedDesc, "-created_at"),
        (Order::CreatedAsc, "created_at"),
        (Order::PriorityAsc, "priority"),
        (Order::PriorityDesc, "-priority"),
    ];

    pub fn as_str(self) -> &'static str {
        Order::ALL
            .iter()
            .find(|(o, _)| *o == self)
            .expect("every order is listed")
            .1
    }

    fn parse(s: &str) -> Result<Order, ApiError> {
        Order::ALL
            .iter()
            .find(|(_, t)| *t == s)
            .map(|(o, _)| *o)
            .ok_or_else(|| {
                let all: Vec<&str> = Order::ALL.iter().map(|(_, t)| *t).collect();
                ApiError::bad_request(format!("unknown order {s:?}; one of {}", all.join(", ")))
            })
    }

    /// The column it sorts by, and whether it is descending.
    pub fn column(self) -> (&'static str, bool) {
        match self {
            Order::UpdatedDesc => ("updated_at", true),
            Order::UpdatedAsc => ("updated_at", false),
            Order::CreatedDesc => ("created_at", true),
            Order::CreatedAsc => ("created_at", false),
            Order::PriorityAsc => ("priority", false),
            Order::PriorityDesc => ("priority", true),
        }
    }

    /// A task's place in this order, from its JSON.
    pub fn key_of(self, task: &RawValue) -> Option<SortKey> {
        #[derive(Deserialize)]
        struct K {
            id: i64,
            updated_at: String,
            created_at: String,
            priority: i64,
        }
        let k: K = serde_json::from_str(task.get()).ok()?;
        let value = match self.column().0 {
            "updated_at" => KeyValue::Text(k.updated_at),
            "created_at" => KeyValue::Text(k.created_at),
            _ => KeyValue::Int(k.priority),
        };
        Some(SortKey { value, id: k.id })
    }

    /// Compares two keys in this order.
    pub fn cmp(self, a: &SortKey, b: &SortKey) -> std::cmp::Ordering {
        let o = a.value.cmp(&b.value).then(a.id.cmp(&b.id));
        if self.column().1 {
            o.reverse()
        } else {
            o
        }
    }
}

/// The value a task is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    Text(String),
    Int(i64),
}

/// A task's place in an order: its value, then its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub value: KeyValue,
    pub id: i64,
}

impl SortKey {
    /// A REST page's cursor: `value,id`.
    pub fn cursor(&self) -> String {
        match &self.value {
            KeyValue::Text(t) => format!("{t},{}", self.id),
            KeyValue::Int(i) => format!("{i},{}", self.id),
        }
    }

    /// Reads a cursor of `order`.
    pub fn parse_cursor(order: Order, s: &str) -> Result<SortKey, ApiError> {
        let bad = || ApiError::bad_request(format!("`after` {s:?} is not a cursor of this order"));
        let (value, id) = s.rsplit_once(',').ok_or_else(bad)?;
        let id = id.parse().map_err(|_| bad())?;
        let value = match order.column().0 {
            "priority" => KeyValue::Int(value.parse().map_err(|_| bad())?),
            _ => KeyValue::Text(value.to_string()),
        };
        Ok(SortKey { value, id })
    }
}

/// What a change is on a filtered topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Created,
    Updated,
    Deleted,
    /// It matches now and did not before: the event carries the entity.
    Entered,
    /// It matched before and does not now: the event carries its id.
    Left,
    /// A note on a task (only its `task:N` topic hears of it).
    Noted,
}

impl Seen {
    /// A change as an unfiltered topic sees it.
    pub fn of(kind: ChangeKind) -> Seen {
        match kind {
            ChangeKind::Created => Seen::Created,
            ChangeKind::Updated => Seen::Updated,
            ChangeKind::Deleted => Seen::Deleted,
            ChangeKind::Noted => Seen::Noted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Seen::Created => "created",
            Seen::Updated => "updated",
            Seen::Deleted => "deleted",
            Seen::Entered => "entered",
            Seen::Left => "left",
            Seen::Noted => "noted",
        }
    }
}

const TASK_FIELDS: &str = "assignee_id, limit, order, priority_min, status";
const AGENT_FIELDS: &str = "status";

impl Filter {
    /// Reads a filter from `field=value` pairs in any order (a REST query).
    /// An unknown field or value, or a field given twice, is a `bad_request`.
    /// `None` when the pairs filter nothing.
    pub fn from_pairs<'a>(
        entity: Entity,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Filter>, ApiError> {
        let mut seen: Vec<&str> = Vec::new();
        let (mut limits, mut orders) = (false, false);
        let mut filter = match entity {
            Entity::Task => Filter::Tasks {
                status: Vec::new(),
                assignee: None,
                priority_min: None,
                window: None,
            },
            Entity::Agent => Filter::Agents { status: Vec::new() },
        };
        for (field, value) in pairs {
            if seen.contains(&field) {
                return Err(ApiError::bad_request(format!("filter field {field:?} is given twice")));
            }
            seen.push(field);
            match (&mut filter, field) {
                (Filter::Tasks { status, .. }, "status") => *status = statuses(value)?,
                (Filter::Tasks { assignee, .. }, "assignee_id") => *assignee = Some(assignee_of(value)?),
                (Filter::Tasks { window, .. }, "limit") => {
                    let limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")))?;
                    let order = window.map_or(Order::UpdatedDesc, |w| w.order);
                    *window = Some(Window { limit, order });
                    limits = true;
                }
                (Filter::Tasks { window, .. }, "order") => {
                    let order = Order::parse(value)?;
                    let limit = window.map_or(MAX_LIMIT, |w| w.limit);
                    *window = Some(Window { limit, order });
                    orders = true;
                }
                (Filter::Tasks { priority_min, .. }, "priority_min") => {
                    *priority_min = match value.parse::<i32>() {
                        Ok(0) => None,
                        Ok(p @ 1..=3) => Some(p),
                        _ => return Err(ApiError::bad_request("priority_min must be 0, 1, 2 or 3")),
                    }
                }
                (Filter::Agents { status }, "status") => *status = statuses(value)?,
                (f, other) => {
                    let (kind, fields) = match f {
                        Filter::Tasks { .. } => ("tasks", TASK_FIELDS),
                        Filter::Agents { .. } => ("agents", AGENT_FIELDS),
                    };
                    return Err(ApiError::bad_request(format!(
                        "unknown filter field {other:?}; {kind} filter on {fields}"
                    )));
                }
            }
        }
        if limits != orders {
            return Err(ApiError::bad_request("`limit` and `order` go together"));
        }
        Ok((!filter.is_empty()).then_some(filter))
    }

    /// The window, for a window topic or a REST page.
    pub fn window(&self) -> Option<Window> {
        match self {
            Filter::Tasks { window, .. } => *window,
            Filter::Agents { .. } => None,
        }
    }

    /// Reads the filter of a topic name (what follows `tasks?` or `agents?`):
    /// only its canonical spelling is accepted; any other is a `bad_request`
    /// that gives it. `None` is the unfiltered topic's spelling never
    /// accepted here either (the caller reports it the same way).
    pub fn parse_topic(entity: Entity, topic: &str, query: &str) -> Result<Filter, ApiError> {
        let pairs = query
            .split('&')
            .map(|pair| {
                pair.split_once('=')
                    .ok_or_else(|| ApiError::bad_request(format!("topic {topic:?}: {pair:?} is not field=value")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = Filter::from_pairs(entity, pairs)?;
        let canonical = match &filter {
            Some(f) => f.topic_name(),
            None => Topic::collection_name(entity).to_string(),
        };
        match filter {
            Some(f) if canonical == topic => Ok(f),
            _ => Err(ApiError::bad_request(format!(
                "topic {topic:?} is not in canonical form; use {canonical:?}"
            ))),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Filter::Tasks {
                status,
                assignee,
                priority_min,
                window,
            } => status.is_empty() && assignee.is_none() && priority_min.is_none() && window.is_none(),
            Filter::Agents { status } => status.is_empty(),
        }
    }

    pub fn entity(&self) -> Entity {
        match self {
            Filter::Tasks { .. } => Entity::Task,
            Filter::Agents { .. } => Entity::Agent,
        }
    }

    /// The topic's name: `tasks?…` with the fields in canonical form.
    pub fn topic_name(&self) -> String {
        format!("{}?{self}", Topic::collection_name(self.entity()))
    }

    /// True if the entity (its JSON) matches.
    pub fn matches_json(&self, entity: &serde_json::Value) -> bool {
        Fields::deserialize(entity).is_ok_and(|f| self.matches(&f))
    }

    /// True if an entity with these fields matches.
    fn matches(&self, f: &Fields) -> bool {
        match self {
            Filter::Tasks {
                status,
                assignee,
                priority_min,
                ..
            } => {
                (status.is_empty()
                    || f.status
                        .as_deref()
                        .is_some_and(|s| status.iter().any(|t| t.as_str() == s)))
                    && assignee.is_none_or(|a| match a {
                        Assignee::None => f.assignee_id.flatten().is_none(),
                        Assignee::Id(id) => f.assignee_id.flatten() == Some(id),
                    })
                    && priority_min.is_none_or(|p| f.priority.is_some_and(|q| q >= i64::from(p)))
            }
            Filter::Agents { status } => f
                .status
                .as_deref()
                .is_some_and(|s| status.iter().any(|t| t.as_str() == s)),
        }
    }

    /// What `change` is on this filter's topic, or `None` if its subscribers
    /// do not hear of it. One function for the live path and the replay.
    pub fn event_of(&self, change: &Change) -> Option<Seen> {
        // A window's events are the writer's (see `crate::db::windows`).
        if change.entity != self.entity() || self.window().is_some() {
            return None;
        }
        let parse = |raw: &RawValue| serde_json::from_str::<Fields>(raw.get()).unwrap_or_default();
        match change.kind {
            // Notes go to the task's own topic only.
            ChangeKind::Noted => None,
            ChangeKind::Created => self.matches(&parse(&change.data)).then_some(Seen::Created),
            // A change without `before` (logged before it was kept) is sent:
            // a delete of an entity not held is harmless.
            ChangeKind::Deleted => match &change.before {
                Some(before) => self.matches(&parse(before)).then_some(Seen::Deleted),
                None => Some(Seen::Deleted),
            },
            ChangeKind::Updated => {
                let after = parse(&change.data);
                let was = match &change.before {
                    Some(before) => self.matches(&parse(before).over(&after)),
                    None => self.matches(&after),
                };
                match (was, self.matches(&after)) {
                    (true, true) => Some(Seen::Updated),
                    (false, true) => Some(Seen::Entered),
                    (true, false) => Some(Seen::Left),
                    (false, false) => None,
                }
            }
        }
    }
}

impl fmt::Display for Filter {
    /// The canonical query: fields sorted by name, values sorted by spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match self {
            Filter::Tasks {
                status,
                assignee,
                priority_min,
                window,
            } => {
                match assignee {
                    Some(Assignee::None) => parts.push("assignee_id=none".to_string()),
                    Some(Assignee::Id(id)) => parts.push(format!("assignee_id={id}")),
                    None => {}
                }
                if let Some(w) = window {
                    parts.push(format!("limit={}", w.limit));
                    parts.push(format!("order={}", w.order.as_str()));
                }
                if let Some(p) = priority_min {
                    parts.push(format!("priority_min={p}"));
                }
                if !status.is_empty() {
                    parts.push(format!("status={}", join(status.iter().map(|s| s.as_str()))));
                }
            }
            Filter::Agents { status } => {
                if !status.is_empty() {
                    parts.push(format!("status={}", join(status.iter().map(|s| s.as_str()))));
                }
            }
        }
        f.write_str(&parts.join("&"))
    }
}

fn join<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values.collect::<Vec<_>>().join(",")
}

/// A status enum of either entity, for [`statuses`].
trait Status: Copy + Ord + 'static {
    const ALL: &'static [Self];
    fn parse(s: &str) -> Option<Self>;
    fn spellings() -> String;
}

macro_rules! status {
    ($t:ty) => {
        impl Status for $t {
            const ALL: &'static [Self] = <$t>::ALL;
            fn parse(s: &str) -> Option<Self> {
                <$t>::parse(s)
            }
            fn spellings() -> String {
                <$t>::spellings()
            }
        }
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        /// Ordered by spelling: the canonical order of a filter's values.
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
    };
}
status!(TaskStatus);
status!(AgentStatus);

/// A comma-separated list of statuses, sorted and without repeats; all of
/// them is no filter (an empty list).
fn statuses<S: Status>(value: &str) -> Result<Vec<S>, ApiError> {
    let mut out = value
        .split(',')
        .map(|s| {
            S::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown status {s:?}; one of {}", S::spellings())))
        })
        .collect::<Result<Vec<S>, _>>()?;
    out.sort();
    out.dedup();
    if out.len() == S::ALL.len() {
        out.clear();
    }
    Ok(out)
}

fn assignee_of(value: &str) -> Result<Assignee, ApiError> {
    if value == "none" {
        return Ok(Assignee::None);
    }
    match value.parse::<i64>() {
        Ok(id) if id > 0 => Ok(Assignee::Id(id)),
        _ => Err(ApiError::bad_request(format!(
            "assignee_id must be an agent id or none, not {value:?}"
        ))),
    }
}

/// The fields a filter looks at, as a change's JSON holds them (a `before`
/// holds only some).
#[derive(Debug, Default, Deserialize)]
struct Fields {
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    assignee_id: Option<Option<i64>>,
    priority: Option<i64>,
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

impl Fields {
    /// These previous values over the entity after: the entity before.
    fn over(self, after: &Fields) -> Fields {
        Fields {
            status: self.status.or_else(|| after.status.clone()),
            assignee_id: self.assignee_id.or(after.assignee_id),
            priority: self.priority.or(after.priority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::raw;
    use serde_json::json;

    fn topic(s: &str) -> Result<Topic, String> {
        Topic::parse(s).map_err(|e| e.message)
    }

    #[test]
    fn only_the_canonical_spelling_is_a_topic() {
        for ok in [
            "tasks?assignee_id=7",
            "tasks?status=in_progress,review",
            "tasks?assignee_id=none&priority_min=2",
            "tasks?assignee_id=3&priority_min=1&status=blocked,done",
            "agents?status=busy,idle",
            "agents?status=offline",
        ] {
            assert_eq!(topic(ok).unwrap().to_string(), ok);
        }
        for (bad, canonical) in [
            ("tasks?status=review,in_progress", "tasks?status=in_progress,review"),
            ("tasks?status=done,done", "tasks?status=done"),
            (
                "tasks?priority_min=2&assignee_id=none",
                "tasks?assignee_id=none&priority_min=2",
            ),
            ("tasks?assignee_id=07", "tasks?assignee_id=7"),
            ("tasks?priority_min=0", "tasks"),
            ("tasks?status=blocked,done,in_progress,review,todo", "tasks"),
            ("agents?status=idle,busy", "agents?status=busy,idle"),
        ] {
            let e = topic(bad).unwrap_err();
            assert!(e.contains(&format!("use {canonical:?}")), "{bad}: {e}");
        }
        for (bad, says) in [
            ("tasks?colour=red", "unknown filter field \"colour\""),
            ("tasks?status=doing", "unknown status \"doing\""),
            ("tasks?status=", "unknown status \"\""),
            ("tasks?assignee_id=-1", "assignee_id must be"),
            ("tasks?priority_min=4", "priority_min must be"),
            ("tasks?status=done&status=done", "given twice"),
            ("tasks?status", "is not field=value"),
            ("agents?priority_min=1", "unknown filter field"),
            ("agents?status=busy&", "is not field=value"),
        ] {
            let e = topic(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn change(kind: ChangeKind, before: Option<serde_json::Value>, data: serde_json::Value) -> Change {
        Change {
            seq: 1,
            entity: Entity::Task,
            entity_id: 1,
            kind,
            changed: vec![],
            data: raw(&data),
            before: before.map(|b| raw(&b)),
            by: None,
            at: std::sync::Arc::from(""),
        }
    }

    #[test]
    fn a_change_is_entered_left_updated_or_nothing() {
        let Ok(Topic::Filtered(f)) = Topic::parse("tasks?assignee_id=none&status=done") else {
            panic!()
        };
        let task = |status: &str, a: Option<i64>| json!({"id": 1, "status": status, "assignee_id": a, "priority": 0});
        let u = |before, after| f.event_of(&change(ChangeKind::Updated, Some(before), after));
        assert_eq!(u(json!({"status": "todo"}), task("done", None)), Some(Seen::Entered));
        assert_eq!(u(json!({"status": "done"}), task("todo", None)), Some(Seen::Left));
        assert_eq!(u(json!({"title": "x"}), task("done", None)), Some(Seen::Updated));
        assert_eq!(u(json!({"assignee_id": null}), task("done", Some(2))), Some(Seen::Left));
        assert_eq!(u(json!({"assignee_id": 2}), task("done", None)), Some(Seen::Entered));
        assert_eq!(u(json!({"status": "todo"}), task("review", None)), None);
        let c = |data| f.event_of(&change(ChangeKind::Created, None, data));
        assert_eq!(c(task("done", None)), Some(Seen::Created));
        assert_eq!(c(task("todo", None)), None);
        let d = |before| f.event_of(&change(ChangeKind::Deleted, Some(before), json!({"id": 1})));
        assert_eq!(d(task("done", None)), Some(Seen::Deleted));
        assert_eq!(d(task("done", Some(3))), None);
        let mut agent = change(ChangeKind::Created, None, task("done", None));
        agent.entity = Entity::Agent;
        assert_eq!(f.event_of(&agent), None);
    }
}
