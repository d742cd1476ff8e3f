//! The wire contract in serde types: topics, client frames, server frames and the
//! params of every call method. Parsing here only checks shape (`bad_request`);
//! the rules of the entities (`invalid`, `not_found`, ...) live in `db::rules`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use crate::error::ApiError;

/// The largest integer `ref` a client may use: one JSON number within ±2^53.
const MAX_REF: u64 = 1 << 53;

/// The most activity entries a subscribe may ask for with a task's snapshot.
pub const MAX_HISTORY: u32 = 200;

/// What a client can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Tasks,
    Task(i64),
    Agents,
    Agent(i64),
    /// A collection with a filter (`tasks?status=done`): see [`crate::filter`].
    Filtered(Arc<Filter>),
}

impl Topic {
    /// Parses a topic string; only the canonical spelling is accepted, so one
    /// topic has exactly one name.
    pub fn parse(s: &str) -> Result<Topic, ApiError> {
        let bad = || ApiError::bad_request(format!("unknown topic {s:?}"));
        match s {
            "tasks" => return Ok(Topic::Tasks),
            "agents" => return Ok(Topic::Agents),
            _ => {}
        }
        if let Some((kind, query)) = s.split_once('?') {
            let entity = match kind {
                "tasks" => Entity::Task,
                "agents" => Entity::Agent,
                _ => return Err(bad()),
            };
            return Ok(Topic::Filtered(Arc::new(Filter::parse_topic(entity, s, query)?)));
        }
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        let canonical = !id.is_empty() && !id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit());
        let id: i64 = if canonical {
            id.parse().map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        match kind {
            "task" => Ok(Topic::Task(id)),
            "agent" => Ok(Topic::Agent(id)),
            _ => Err(bad()),
        }
    }

    /// The name of an entity kind's collection topic.
    pub fn collection_name(entity: Entity) -> &'static str {
        match entity {
            Entity::Task => "tasks",
            Entity::Agent => "agents",
        }
    }

    /// True for a window topic (`tasks?limit=…&order=…`), which the writer
    /// answers and computes (see `crate::db::windows`).
    pub fn is_window(&self) -> bool {
        matches!(self, Topic::Filtered(f) if f.window().is_some())
    }

    /// The collection topic of an entity kind: `tasks` or `agents`.
    pub fn collection(entity: Entity) -> &'static Topic {
        match entity {
            Entity::Task => &Topic::Tasks,
            Entity::Agent => &Topic::Agents,
        }
    }

    /// The topics a change of `entity` `id` is published on.
    pub fn for_entity(entity: Entity, id: i64) -> [Topic; 2] {
        let single = match entity {
            Entity::Task => Topic::Task(id),
            Entity::Agent => Topic::Agent(id),
        };
        [Topic::collection(entity).clone(), single]
    }

    /// The changes this topic receives: an entity kind, and one entity of it
    /// for a single-entity topic.
    pub fn filter(&self) -> (Entity, Option<i64>) {
        match self {
            Topic::Tasks => (Entity::Task, None),
            Topic::Task(id) => (Entity::Task, Some(*id)),
            Topic::Agents => (Entity::Agent, None),
            Topic::Agent(id) => (Entity::Agent, Some(*id)),
            Topic::Filtered(f) => (f.entity(), None),
        }
    }

    /// True if a change of `entity` `id` belongs to this topic (for a
    /// filtered topic, if it may: see [`Filter::event_of`]).
    pub fn matches(&self, entity: Entity, id: i64) -> bool {
        let (kind, one) = self.filter();
        kind == entity && one.is_none_or(|one| one == id)
    }

    /// What a change is on this topic: its own kind on an unfiltered
    /// topic; on a filtered one, what the filter makes of it, if anything.
    pub fn sees(&self, change: &Change) -> Option<Seen> {
        match self {
            Topic::Filtered(f) => f.event_of(change),
            _ => self.receives(change).then(|| Seen::of(change.kind)),
        }
    }

    /// True if this topic receives `change`: a change of its entities, but
    /// notes only on the single task's topic (the overview stays light).
    pub fn receives(&self, change: &Change) -> bool {
        self.matches(change.entity, change.entity_id) && (change.kind != ChangeKind::Noted || self.filter().1.is_some())
    }

    /// The kind of topic, for metrics: `tasks`, `task`, `agents` or `agent`.
    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Tasks => "tasks",
            Topic::Task(_) => "task",
            Topic::Agents => "agents",
            Topic::Agent(_) => "agent",
            Topic::Filtered(f) => match f.entity() {
                Entity::Task => "tasks_filtered",
                Entity::Agent => "agents_filtered",
            },
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Tasks => f.write_str("tasks"),
            Topic::Agents => f.write_str("agents"),
            Topic::Task(id) => write!(f, "task:{id}"),
            Topic::Agent(id) => write!(f, "agent:{id}"),
            Topic::Filtered(filter) => f.write_str(&filter.topic_name()),
        }
    }
}

pub use crate::filter::{Filter, Seen};
pub use crate::model::{ChangeKind, Entity};

/// A client's `ref`, kept as the JSON value it came as so the reply echoes it.
pub type Ref = Value;

/// Reads a frame's `ref` if it is a readable one: a string, or an integer within
/// ±2^53 written without fraction or exponent.
pub fn readable_ref(frame: &Map<String, Value>) -> Option<Ref> {
    ref_of(frame.get("ref")?)
}

/// A `ref` value, if it is one: a string or an integer within ±2^53.
fn ref_of(v: &Value) -> Option<Ref> {
    match v {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => {
            let ok = n
                .as_u64()
                .map(|u| u <= MAX_REF)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= MAX_REF));
            ok.unwrap_or(false).then(|| Value::Number(n.clone()))
        }
        _ => None,
    }
}

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `presence`: the reply lists who holds the topic, and presence
    /// frames follow.
    Subscribe {
        topic: Topic,
        resume: Option<Position>,
        /// How many of a task's newest activity entries to send with its snapshot.
        history: u32,
        presence: bool,
    },
    Unsubscribe {
        topic: Topic,
    },
    Call(Call),
    Ping,
}

/// A position in one database's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Option<String>,
    pub since: i64,
}

/// A write (or heartbeat) from either door: a socket `call` or a REST request.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub params: Value,
    pub op_id: Option<String>,
}

/// The call methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    TaskCreate,
    TaskUpdate,
    TaskDelete,
    AgentCreate,
    AgentUpdate,
    AgentDelete,
    AgentHeartbeat,
    TaskNote,
    TaskClaim,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "task.create" => Method::TaskCreate,
            "task.update" => Method::TaskUpdate,
            "task.delete" => Method::TaskDelete,
            "agent.create" => Method::AgentCreate,
            "agent.update" => Method::AgentUpdate,
            "agent.delete" => Method::AgentDelete,
            "agent.heartbeat" => Method::AgentHeartbeat,
            "task.note" => Method::TaskNote,
            "task.claim" => Method::TaskClaim,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::TaskCreate => "task.create",
            Method::TaskUpdate => "task.update",
            Method::TaskDelete => "task.delete",
            Method::AgentCreate => "agent.create",
            Method::AgentUpdate => "agent.update",
            Method::AgentDelete => "agent.delete",
            Method::AgentHeartbeat => "agent.heartbeat",
            Method::TaskNote => "task.note",
            Method::TaskClaim => "task.claim",
        }
    }
}

/// A frame that could not be executed: the `ref` to answer, if one could be
/// read, and the error to answer with.
pub type Rejected = (Option<Ref>, ApiError);

/// Parses one text frame into its `ref` and request. Whatever is wrong becomes
/// the error to answer, with the `ref` when one could be read.
pub fn parse_frame(text: &str) -> Result<(Ref, Request), Rejected> {
    match parse_call(text) {
        Some(parsed) => Ok(parsed),
        None => parse_any_frame(text),
    }
}

/// Most frames are well-formed calls: those are read in one pass, straight
/// into their fields. Anything else, or anything wrong, is `None`, for the
/// general path to tell exactly what is wrong.
fn parse_call(text: &str) -> Option<(Ref, Request)> {
    // serde also reads a struct from an array, by position; a frame is an
    // object only.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let f = serde_json::from_str::<CallFrame>(text).ok()?;
    if f.r#type != "call" {
        return None;
    }
    let reference = ref_of(&f.r#ref)?;
    let method = Method::parse(f.method)?;
    let op_id = f.op_id.map(check_op_id).transpose().ok()?;
    let params = Value::Object(f.params);
    Some((reference, Request::Call(Call { method, params, op_id })))
}

/// Parses any frame, as a JSON value first, so that whatever is wrong with it
/// can be told (and its `ref` still answered).
fn parse_any_frame(text: &str) -> Result<(Ref, Request), Rejected> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (None, ApiError::bad_request(format!("not JSON: {e}"))))?;
    let Value::Object(frame) = value else {
        return Err((None, ApiError::bad_request("a frame must be a JSON object")));
    };
    let Some(reference) = readable_ref(&frame) else {
        let message = if frame.contains_key("ref") {
            "`ref` must be a string or an integer within ±2^53"
        } else {
            "missing `ref`"
        };
        return Err((None, ApiError::bad_request(message)));
    };
    match parse_request(frame) {
        Ok(request) => Ok((reference, request)),
        Err(e) => Err((Some(reference), e)),
    }
}

/// A `call` frame, as [`parse_request`] reads one (same fields, same rules),
/// borrowing what it only compares.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallFrame<'a> {
    r#type: &'a str,
    r#ref: Value,
    method: &'a str,
    params: Map<String, Value>,
    #[serde(default, deserialize_with = "present")]
    op_id: Option<String>,
}

fn parse_request(frame: Map<String, Value>) -> Result<Request, ApiError> {
    let kind = match frame.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(ApiError::bad_request("`type` must be a string")),
        None => return Err(ApiError::bad_request("missing `type`")),
    };
    let frame = Value::Object(frame);
    match kind.as_str() {
        "subscribe" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct F {
                #[allow(dead_code)]
                r#type: String,
                #[allow(dead_code)]
                r#ref: Value,
                topic: String,
                #[serde(default, deserialize_with = "present")]
                epoch: Option<String>,
                #[serde(default, deserialize_with = "present")]
                since: Option<u64>,
                #[serde(default, deserialize_with = "present")]
                history: Option<u32>,
                #[serde(default, deserialize_with = "present")]
                presence: Option<bool>,
            }
            let f: F = from_value(frame)?;
            let topic = Topic::parse(&f.topic)?;
            let history = f.history.unwrap_or(0);
            if history > MAX_HISTORY {
                return Err(ApiError::invalid(format!("`history` is at most {MAX_HISTORY}")));
            }
            if history > 0 && !matches!(topic, Topic::Task(_)) {
                return Err(ApiError::invalid("`history` is only for `task:N` topics"));
            }
            let since = f
                .since
                .map(i64::try_from)
                .transpose()
                .map_err(|_| ApiError::bad_request("`since` is too large"))?;
            Ok(Request::Subscribe {
                topic,
                resume: since.map(|since| Position { epoch: f.epoch, since }),
                history,
                presence: f.presence.unwrap_or(false),
            })
        }
        "unsubscribe" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct F {
                #[allow(dead_code)]
                r#type: String,
                #[allow(dead_code)]
                r#ref: Value,
                topic: String,
            }
            let f: F = from_value(frame)?;
            Ok(Request::Unsubscribe {
                topic: Topic::parse(&f.topic)?,
            })
        }
        "call" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct F {
                #[allow(dead_code)]
                r#type: String,
                #[allow(dead_code)]
                r#ref: Value,
                method: String,
                params: Map<String, Value>,
                #[serde(default, deserialize_with = "present")]
                op_id: Option<String>,
            }
            let f: F = from_value(frame)?;
            let method = Method::parse(&f.method)
                .ok_or_else(|| ApiError::bad_request(format!("unknown method {:?}", f.method)))?;
            let op_id = f.op_id.map(check_op_id).transpose()?;
            Ok(Request::Call(Call {
                method,
                params: Value::Object(f.params),
                op_id,
            }))
        }
        "ping" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct F {
                #[allow(dead_code)]
                r#type: String,
                #[allow(dead_code)]
                r#ref: Value,
            }
            let _: F = from_value(frame)?;
            Ok(Request::Ping)
        }
        other => Err(ApiError::bad_request(format!("unknown frame type {other:?}"))),
    }
}

/// Checks a client-chosen idempotency key (`op_id` or `Idempotency-Key`).
pub fn check_op_id(op_id: String) -> Result<String, ApiError> {
    // A string of any length is well formed; its length is a rule.
    if op_id.is_empty() || op_id.chars().count() > 100 {
        return Err(ApiError::invalid("an op_id has 1 to 100 characters"));
    }
    Ok(op_id)
}

/// Deserializes with serde, turning its message into a `bad_request`.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Like [`from_value`], reading a borrowed value (no copy of it first).
pub fn from_ref<T: DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    T::deserialize(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// For optional fields that may not be null: absent is `None`, null is a
/// `bad_request` like any other wrong type.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For patch fields that may be set to null: absent is `None`, null is
/// `Some(None)`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Params of `task.create`. `title` is optional here so that its absence is an
/// `invalid` (a rule), not a `bad_request` (a shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCreate {
    #[serde(default, deserialize_with = "present")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub priority: Option<i64>,
    pub progress: Option<i64>,
    pub assignee_id: Option<i64>,
}

/// The fields a task patch may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    #[serde(default, deserialize_with = "present")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    pub progress: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub assignee_id: Option<Option<i64>>,
}

/// Params of `agent.create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCreate {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub meta: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    pub current_task_id: Option<i64>,
}

/// The fields an agent patch may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub current_task_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub meta: Option<Map<String, Value>>,
}

/// Params of `task.update` and `agent.update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update<P> {
    pub id: i64,
    pub patch: P,
    #[serde(default, deserialize_with = "present")]
    pub if_version: Option<i64>,
}

/// Params of `task.delete` and `agent.delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    pub id: i64,
    #[serde(default, deserialize_with = "present")]
    pub if_version: Option<i64>,
}

/// Params of `task.note`. `text` is optional here so that its absence is an
/// `invalid`, like a missing title.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskNote {
    pub id: i64,
    #[serde(default, deserialize_with = "present")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub progress: Option<Option<i64>>,
}

/// Params of `task.claim`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub id: i64,
}

/// Params of `agent.heartbeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub id: i64,
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub current_task_id: Option<Option<i64>>,
}

// ---- server frames ----

/// The first frame on every socket.
#[derive(Debug, Serialize)]
pub struct Hello<'a> {
    pub r#type: &'static str,
    pub server: &'static str,
    pub epoch: &'a str,
    pub seq: i64,
    pub heartbeat_ms: u64,
    pub agent_timeout_ms: u64,
    /// How long an `in_progress` task may go unchanged before pages call it stuck.
    pub stuck_after_ms: u64,
    pub role: &'static str,
    pub token_id: i64,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
}

/// The server's name and version as `hello` shows it.
pub const SERVER_NAME: &str = concat!("taskwire/", env!("CARGO_PKG_VERSION"));

/// A reply frame, serialized straight from borrowed parts.
#[derive(Serialize)]
struct Reply<'a, D: Serialize + ?Sized> {
    r#type: &'static str,
    r#ref: &'a Ref,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// A successful reply; `seq` only when the request committed a change. `data`
/// may be a JSON value or already serialized JSON (`RawValue`).
pub fn reply_ok<D: Serialize + ?Sized>(reference: &Ref, data: &D, seq: Option<i64>) -> String {
    let reply = Reply {
        r#type: "reply",
        r#ref: reference,
        ok: true,
        data: Some(data),
        seq,
        error: None,
    };
    serde_json::to_string(&reply).expect("a reply serializes")
}

/// A failed reply.
pub fn reply_err(reference: &Ref, e: &ApiError) -> String {
    let reply: Reply<'_, Value> = Reply {
        r#type: "reply",
        r#ref: reference,
        ok: false,
        data: None,
        seq: None,
        error: Some(e.body()),
    };
    serde_json::to_string(&reply).expect("a reply serializes")
}

/// An answer to a frame without a readable `ref`.
pub fn error_frame(e: &ApiError) -> String {
    json!({"type": "error", "error": e.body()}).to_string()
}

/// JSON as text: what replies, the change log and events carry.
pub fn raw(v: &Value) -> Arc<RawValue> {
    Arc::from(serde_json::value::to_raw_value(v).expect("a JSON value serializes"))
}

/// `{}` as text, the data of replies that carry nothing: one shared copy.
pub fn empty_object() -> Arc<RawValue> {
    static EMPTY: LazyLock<Arc<RawValue>> = LazyLock::new(|| raw(&json!({})));
    EMPTY.clone()
}

/// One committed change, as the Db actor publishes it.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: i64,
    pub entity: Entity,
    pub entity_id: i64,
    pub kind: ChangeKind,
    pub changed: Vec<String>,
    /// The entity's JSON, serialized once on the writer's thread and shared
    /// by the reply, the change log, the resume memory and every event. A
    /// note's data is the note.
    pub data: Arc<RawValue>,
    /// Who made it ([`crate::auth::Principal::author`]); none on changes
    /// committed before authors were recorded.
    pub by: Option<Arc<RawValue>>,
    /// An update's previous values of the fields in `changed`; for a delete,
    /// the whole entity (filtered topics read it; it is not sent).
    pub before: Option<Arc<RawValue>>,
    pub at: Arc<str>,
}

/// An event frame, serialized straight from a borrowed change.
#[derive(Serialize)]
pub struct EventFrame<'a> {
    r#type: &'static str,
    topic: String,
    seq: i64,
    event: String,
    changed: &'a [String],
    data: Cow<'a, RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a RawValue>,
    at: &'a str,
}

impl Change {
    /// The event frame of this change on an unfiltered `topic`, to serialize
    /// (a resume's replay) without building a JSON value first.
    pub fn frame(&self, topic: &Topic) -> EventFrame<'_> {
        self.frame_as(topic, Seen::of(self.kind))
    }

    /// The event frame of this change as `seen` on `topic`: a `left` event
    /// carries only the entity's id.
    pub fn frame_as(&self, topic: &Topic, seen: Seen) -> EventFrame<'_> {
        let data = match seen {
            Seen::Left => {
                Cow::Owned(serde_json::value::to_raw_value(&json!({ "id": self.entity_id })).expect("an id serializes"))
            }
            _ => Cow::Borrowed(&*self.data),
        };
        EventFrame {
            r#type: "event",
            topic: topic.to_string(),
            seq: self.seq,
            event: format!("{}.{}", self.entity.as_str(), seen.as_str()),
            changed: &self.changed,
            data,
            // Sent on updates only (a delete's is for filtered topics).
            before: (seen == Seen::Updated).then_some(self.before.as_deref()).flatten(),
            by: self.by.as_deref(),
            at: &self.at,
        }
    }

    /// The text of an event this change makes on a window (see
    /// `crate::db::windows`): `event` about the entity `data`, which may be
    /// another task the change let in or pushed out (then `changed` is
    /// empty).
    pub fn window_event(&self, topic: &Topic, event: &str, changed: &[String], data: &RawValue) -> String {
        let frame = EventFrame {
            r#type: "event",
            topic: topic.to_string(),
            seq: self.seq,
            event: event.to_string(),
            changed,
            data: Cow::Borrowed(data),
            before: (event == "task.updated").then_some(self.before.as_deref()).flatten(),
            by: self.by.as_deref(),
            at: &self.at,
        };
        serde_json::to_string(&frame).expect("an event serializes")
    }

    /// The event frame of this change on `topic`, as the text sent to
    /// subscribers; none if the topic does not hear of it.
    pub fn event_text(&self, topic: &Topic) -> Option<String> {
        let seen = topic.sees(self)?;
        Some(serde_json::to_string(&self.frame_as(topic, seen)).expect("an event serializes"))
    }
}

/// The event frame of a heartbeat on `topic` (no `seq`: it is not a change).
pub fn heartbeat_event(topic: &Topic, agent_id: i64, at: &str) -> Value {
    json!({
        "type": "event",
        "topic": topic.to_string(),
        "event": "agent.heartbeat",
        "data": {"id": agent_id, "at": at},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_only_canonical_names() {
        assert_eq!(Topic::parse("tasks").unwrap(), Topic::Tasks);
        assert_eq!(Topic::parse("task:42").unwrap(), Topic::Task(42));
        assert_eq!(Topic::parse("agent:7").unwrap(), Topic::Agent(7));
        for bad in [
            "task:",
            "task:0",
            "task:042",
            "task:-1",
            "task:1x",
            "tasks:1",
            "foo",
            "",
            "task:99999999999999999999",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Topic::Task(42).to_string(), "task:42");
    }

    #[test]
    fn a_call_read_in_one_pass_is_what_the_general_path_reads() {
        let frames = [
            r#"{"type":"call","ref":1,"method":"task.update","params":{"id":1,"patch":{"title":"x"}}}"#,
            r#"{"type":"call","ref":"a","method":"task.create","params":{},"op_id":"k1"}"#,
            r#" {"params":{"id":2},"method":"task.delete","ref":-9007199254740992,"type":"call"} "#,
            r#"{"type":"call","ref":9007199254740993,"method":"task.delete","params":{}}"#,
            r#"{"type":"call","ref":1.5,"method":"task.delete","params":{}}"#,
            r#"{"type":"call","ref":null,"method":"task.delete","params":{}}"#,
            r#"{"type":"call","method":"task.delete","params":{}}"#,
            r#"{"type":"call","ref":1,"method":"task.nope","params":{}}"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":[]}"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":{},"op_id":null}"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":{},"op_id":""}"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":{},"extra":1}"#,
            r#"{"type":"call","ref":1,"ref":2,"method":"task.delete","params":{}}"#,
            r#"{"type":"c\u0061ll","ref":1,"method":"task.delete","params":{}}"#,
            r#"{"type":"ping","ref":1,"method":"task.delete","params":{}}"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":{}} x"#,
            r#"{"type":"call","ref":1,"method":"task.delete","params":{}"#,
            r#"["call",1,"task.delete",{"id":2}]"#,
            r#" ["call",1,"task.delete",{"id":2},"k1"]"#,
        ];
        for (i, f) in frames.iter().enumerate() {
            let one_pass = parse_call(f);
            assert_eq!(one_pass.is_some(), i < 3, "{f}");
            let general = parse_any_frame(f);
            if let Some(parsed) = one_pass {
                assert_eq!(Ok(parsed), general, "{f}");
            }
            assert_eq!(parse_frame(f), general, "{f}");
        }
        assert!(
            parse_frame(frames[13]).is_ok(),
            "escaped names are read the general way"
        );
        assert!(parse_frame(frames[17]).is_err(), "a frame is an object, not an array");
    }

    #[test]
    fn refs_are_strings_or_safe_integers() {
        let r = |s: &str| match parse_frame(s) {
            Ok((r, _)) => Some(r),
            Err((r, _)) => r,
        };
        assert_eq!(r(r#"{"ref":1,"type":"ping"}"#), Some(json!(1)));
        assert_eq!(r(r#"{"ref":"a","type":"ping"}"#), Some(json!("a")));
        assert_eq!(
            r(r#"{"ref":-9007199254740992,"type":"ping"}"#),
            Some(json!(-9007199254740992i64))
        );
        assert_eq!(r(r#"{"ref":9007199254740993,"type":"ping"}"#), None);
        assert_eq!(r(r#"{"ref":1.0,"type":"ping"}"#), None);
        assert_eq!(r(r#"{"ref":1e3,"type":"ping"}"#), None);
        assert_eq!(r(r#"{"ref":null,"type":"ping"}"#), None);
        assert_eq!(r(r#"{"ref":[1],"type":"ping"}"#), None);
    }

    #[test]
    fn bad_frames_are_bad_requests_with_their_ref() {
        for text in [
            r#"{"ref":1}"#,
            r#"{"ref":1,"type":"nope"}"#,
            r#"{"ref":1,"type":"subscribe"}"#,
            r#"{"ref":1,"type":"subscribe","topic":"x"}"#,
            r#"{"ref":1,"type":"subscribe","topic":"tasks","since":-1}"#,
            r#"{"ref":1,"type":"call","method":"task.create"}"#,
            r#"{"ref":1,"type":"call","method":"nope","params":{}}"#,
            r#"{"ref":1,"type":"call","method":"task.create","params":[]}"#,
            r#"{"ref":1,"type":"ping","extra":true}"#,
        ] {
            let (r, e) = parse_frame(text).unwrap_err();
            assert_eq!(r, Some(json!(1)), "{text}");
            assert_eq!(e.code, crate::error::ErrorCode::BadRequest, "{text}");
        }
        for text in ["", "nope", "[1]", "1", r#"{"type":"ping"}"#] {
            let (r, e) = parse_frame(text).unwrap_err();
            assert!(r.is_none());
            assert_eq!(e.code, crate::error::ErrorCode::BadRequest);
        }
    }

    #[test]
    fn good_frames_parse() {
        let (_, request) =
            parse_frame(r#"{"ref":2,"type":"subscribe","topic":"task:42","epoch":"e","since":1200}"#).unwrap();
        assert_eq!(
            request,
            Request::Subscribe {
                topic: Topic::Task(42),
                resume: Some(Position {
                    epoch: Some("e".into()),
                    since: 1200
                }),
                history: 0,
                presence: false,
            }
        );
        let (_, request) =
            parse_frame(r#"{"ref":5,"type":"call","method":"task.update","params":{"id":1,"patch":{}},"op_id":"x"}"#)
                .unwrap();
        match request {
            Request::Call(c) => {
                assert_eq!(c.method, Method::TaskUpdate);
                assert_eq!(c.op_id.as_deref(), Some("x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn event_text_is_the_event_frame() {
        let c = Change {
            seq: 7,
            entity: Entity::Task,
            entity_id: 3,
            kind: ChangeKind::Updated,
            changed: vec!["status".into()],
            data: raw(&json!({"id": 3, "status": "done"})),
            by: Some(raw(&json!({"kind": "system"}))),
            before: Some(raw(&json!({"status": "todo"}))),
            at: Arc::from("2026-12-09T10:00:00.000Z"),
        };
        for topic in [Topic::Tasks, Topic::Task(3)] {
            let expected = json!({"type": "event", "topic": topic.to_string(), "seq": 7, "event": "task.updated",
                "changed": ["status"], "data": {"id": 3, "status": "done"}, "before": {"status": "todo"},
                "by": {"kind": "system"}, "at": "2026-12-09T10:00:00.000Z"});
            let text: Value = serde_json::from_str(&c.event_text(&topic).unwrap()).unwrap();
            assert_eq!(text, expected);
        }
        let reply: Value = serde_json::from_str(&reply_ok(&json!("r"), &json!({"a": 1}), Some(4))).unwrap();
        assert_eq!(
            reply,
            json!({"type": "reply", "ref": "r", "ok": true, "data": {"a": 1}, "seq": 4})
        );
        let e = ApiError::invalid("no");
        let reply: Value = serde_json::from_str(&reply_err(&json!(1), &e)).unwrap();
        assert_eq!(
            reply,
            json!({"type": "reply", "ref": 1, "ok": false, "error": {"code": "invalid", "message": "no"}})
        );
    }

    #[test]
    fn patches_tell_null_from_absent() {
        let p: TaskPatch = serde_json::from_str(r#"{"assignee_id":null}"#).unwrap();
        assert_eq!(p.assignee_id, Some(None));
        let p: TaskPatch = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(p.assignee_id, None);
        assert!(serde_json::from_str::<TaskPatch>(r#"{"bogus":1}"#).is_err());
    }
}
