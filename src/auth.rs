//! Tokens, roles and the one policy table that says who may do what.
//!
//! Tokens are 256 random bits; only their SHA-256 is stored. Every live token
//! and browser session is held in memory, so a request is authenticated with
//! one hash and a map lookup, never a query.

use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

crate::model::text_enum! {
    /// What a token may do.
    Role { Admin = "admin", Member = "member", Agent = "agent" }
}

/// Who is asking: the token's id, its role, its name and, for an agent token,
/// its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: i64,
    pub role: Role,
    pub agent_id: Option<i64>,
    pub name: Arc<str>,
}

impl Principal {
    /// The server itself, for its own changes (agents going offline, demo mode).
    pub fn system() -> Principal {
        Principal {
            token_id: 0,
            role: Role::Admin,
            agent_id: None,
            name: Arc::from("system"),
        }
    }

    pub fn is_system(&self) -> bool {
        self.token_id == 0
    }

    /// The author of a change, as events carry it in `by`.
    pub fn author(&self) -> Value {
        if self.is_system() {
            return json!({"kind": "system"});
        }
        let mut by = json!({"kind": self.role, "token_id": self.token_id, "name": &*self.name});
        if let Some(agent_id) = self.agent_id {
            by["agent_id"] = json!(agent_id);
        }
        by
    }

    /// Who the token is, as `hello` and `GET /api/me` tell it.
    pub fn me(&self) -> Value {
        let mut me = json!({"token_id": self.token_id, "name": &*self.name, "role": self.role});
        if let Some(agent_id) = self.agent_id {
            me["agent_id"] = json!(agent_id);
        }
        me
    }
}

/// Everything a principal may ask for, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    CreateTask,
    /// Updating a task currently assigned to `assignee_id`.
    UpdateTask {
        assignee_id: Option<i64>,
    },
    DeleteTask,
    /// Adding a note to a task currently assigned to `assignee_id`.
    NoteTask {
        assignee_id: Option<i64>,
    },
    /// Taking an unassigned task for one's own agent.
    ClaimTask,
    CreateAgent,
    UpdateAgent {
        id: i64,
    },
    DeleteAgent,
    Heartbeat {
        id: i64,
    },
    ManageTokens,
}

/// The policy: the one place that decides whether a role may do an action.
pub fn authorize(p: &Principal, action: Action) -> Result<(), ApiError> {
    let allowed = match (p.role, action) {
        // Only an agent has an agent to assign.
        (role, Action::ClaimTask) => role == Role::Agent,
        (Role::Admin, _) => true,
        (_, Action::Read) => true,
        (
            Role::Member,
            Action::CreateTask | Action::UpdateTask { .. } | Action::DeleteTask | Action::NoteTask { .. },
        ) => true,
        (Role::Agent, Action::UpdateTask { assignee_id } | Action::NoteTask { assignee_id }) => {
            assignee_id.is_some() && assignee_id == p.agent_id
        }
        (Role::Agent, Action::UpdateAgent { id } | Action::Heartbeat { id }) => p.agent_id == Some(id),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "the {} role may not do this",
            p.role.as_str()
        )))
    }
}

/// A new random token: `tw_` and 64 hex digits (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("tw_{}", hex::encode(bytes))
}

/// A new one-time login code: `twl_` and 64 hex digits (256 bits). Stored, like
/// a token, only as its SHA-256.
pub fn generate_login_code() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("twl_{}", hex::encode(bytes))
}

/// True if `code` has the shape of a login code; anything else is refused
/// without a look in the database.
pub fn is_login_code(code: &str) -> bool {
    code.strip_prefix("twl_")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The link that logs a browser in with a login code: `base` is the server's
/// origin as the browser reaches it, like `http://127.0.0.1:8080`.
pub fn login_link(base: &str, code: &str) -> String {
    format!("{}/login?code={code}", base.trim_end_matches('/'))
}

/// The stored form of a token: its SHA-256, in hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Every live token by hash, and every live browser session by hash. The Db
/// actor fills it at start and keeps it current: it creates and revokes
/// tokens itself, and reloads it when another process wrote to the file.
#[derive(Default)]
pub struct TokenCache {
    inner: RwLock<Live>,
}

#[derive(Default)]
struct Live {
    by_hash: HashMap<String, Principal>,
    by_id: HashMap<i64, Principal>,
    /// Browser sessions: token id and expiry (RFC 3339, comparable as text).
    sessions: HashMap<String, (i64, String)>,
}

impl TokenCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.inner.read().expect("token cache poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.inner.write().expect("token cache poisoned")
    }

    pub fn insert(&self, hash: String, p: Principal) {
        let mut live = self.write();
        live.by_id.insert(p.token_id, p.clone());
        live.by_hash.insert(hash, p);
    }

    /// Holds exactly these tokens and sessions from now on. Returns the ids of
    /// tokens it held that are not among them (revoked elsewhere).
    pub fn replace_all(&self, tokens: Vec<(String, Principal)>, sessions: Vec<(String, i64, String)>) -> Vec<i64> {
        let mut fresh = Live::default();
        for (hash, p) in tokens {
            fresh.by_id.insert(p.token_id, p.clone());
            fresh.by_hash.insert(hash, p);
        }
        fresh.sessions = sessions.into_iter().map(|(h, id, exp)| (h, (id, exp))).collect();
        let mut live = self.write();
        let gone = live
            .by_id
            .keys()
            .filter(|id| !fresh.by_id.contains_key(id))
            .copied()
            .collect();
        *live = fresh;
        gone
    }

    /// Forgets a token and every browser session made with it.
    pub fn remove_token(&self, token_id: i64) {
        let mut live = self.write();
        live.by_id.remove(&token_id);
        live.by_hash.retain(|_, p| p.token_id != token_id);
        live.sessions.retain(|_, (t, _)| *t != token_id);
    }

    /// True if the token is live.
    pub fn has_token(&self, token_id: i64) -> bool {
        self.read().by_id.contains_key(&token_id)
    }

    /// A live token of an agent, the oldest, as its principal.
    pub fn agent_principal(&self, agent_id: i64) -> Option<Principal> {
        self.read()
            .by_id
            .values()
            .filter(|p| p.agent_id == Some(agent_id))
            .min_by_key(|p| p.token_id)
            .cloned()
    }

    pub fn insert_session(&self, hash: String, token_id: i64, expires_at: String) {
        self.write().sessions.insert(hash, (token_id, expires_at));
    }

    pub fn remove_session(&self, hash: &str) {
        self.write().sessions.remove(hash);
    }

    /// The principal of a presented token, if it is a live one.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        let live = self.read();
        let (stored, p) = live.by_hash.get_key_value(&hash)?;
        // The lookup is by equality of a hash of 256 random bits; the constant-time
        // compare keeps the last step free of timing differences too.
        bool::from(stored.as_bytes().ct_eq(hash.as_bytes())).then(|| p.clone())
    }

    /// The principal of a browser session cookie, if the session and its token
    /// are live.
    pub fn verify_session(&self, secret: &str) -> Option<Principal> {
        let hash = hash_token(secret);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let live = self.read();
        let (token_id, expires_at) = live.sessions.get(&hash)?;
        if *expires_at <= now {
            // Pruned from the file and the cache by the Db actor's upkeep.
            return None;
        }
        live.by_id.get(token_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, agent_id: Option<i64>) -> Principal {
        Principal {
            token_id: 1,
            role,
            agent_id,
            name: Arc::from("p"),
        }
    }

    #[test]
    fn policy_table() {
        let admin = p(Role::Admin, None);
        let member = p(Role::Member, None);
        let agent = p(Role::Agent, Some(7));
        for a in [
            Action::Read,
            Action::CreateTask,
            Action::DeleteAgent,
            Action::ManageTokens,
            Action::Heartbeat { id: 1 },
        ] {
            assert!(authorize(&admin, a).is_ok());
        }
        assert!(authorize(&member, Action::CreateTask).is_ok());
        assert!(authorize(&member, Action::UpdateTask { assignee_id: None }).is_ok());
        assert!(authorize(&member, Action::CreateAgent).is_err());
        assert!(authorize(&member, Action::Heartbeat { id: 7 }).is_err());
        assert!(authorize(&member, Action::ManageTokens).is_err());
        assert!(authorize(&agent, Action::Heartbeat { id: 7 }).is_ok());
        assert!(authorize(&agent, Action::Heartbeat { id: 8 }).is_err());
        assert!(authorize(&agent, Action::UpdateAgent { id: 7 }).is_ok());
        assert!(authorize(&agent, Action::UpdateAgent { id: 8 }).is_err());
        assert!(authorize(&agent, Action::UpdateTask { assignee_id: Some(7) }).is_ok());
        assert!(authorize(&agent, Action::UpdateTask { assignee_id: Some(8) }).is_err());
        assert!(authorize(&agent, Action::UpdateTask { assignee_id: None }).is_err());
        assert!(authorize(&agent, Action::CreateTask).is_err());
        assert!(authorize(&agent, Action::DeleteTask).is_err());
        assert!(authorize(&agent, Action::Read).is_ok());
        assert!(authorize(&member, Action::NoteTask { assignee_id: Some(7) }).is_ok());
        assert!(authorize(&agent, Action::NoteTask { assignee_id: Some(7) }).is_ok());
        assert!(authorize(&agent, Action::NoteTask { assignee_id: Some(8) }).is_err());
        assert!(authorize(&agent, Action::NoteTask { assignee_id: None }).is_err());
        assert!(authorize(&agent, Action::ClaimTask).is_ok());
        assert!(authorize(&admin, Action::ClaimTask).is_err());
        assert!(authorize(&member, Action::ClaimTask).is_err());
    }

    #[test]
    fn browser_sessions_expire() {
        let cache = TokenCache::default();
        cache.insert(hash_token("t"), p(Role::Member, None));
        cache.insert_session(hash_token("fresh"), 1, "9999-01-01T00:00:00.000Z".into());
        cache.insert_session(hash_token("old"), 1, "2000-01-01T00:00:00.000Z".into());
        assert!(cache.verify_session("fresh").is_some());
        assert!(cache.verify_session("old").is_none());
        cache.remove_token(1);
        assert!(cache.verify_session("fresh").is_none());
    }

    #[test]
    fn tokens_are_random_and_verified_by_hash() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 67);
        let cache = TokenCache::default();
        cache.insert(hash_token(&a), p(Role::Member, None));
        assert!(cache.verify(&a).is_some());
        assert!(cache.verify(&b).is_none());
        cache.remove_token(1);
        assert!(cache.verify(&a).is_none());
    }
}
