//! Tokens, roles and the one policy table that says who may do what.
//!
//! Tokens are 256 random bits; only their SHA-256 is stored. A verified token's
//! principal is cached in memory and dropped from the cache on revocation.

use diesel::{Connection, SqliteConnection};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Member,
    Agent,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Agent => "agent",
        }
    }
}

/// Who is asking: the token's id, its role and, for an agent token, its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: i64,
    pub role: Role,
    pub agent_id: Option<i64>,
}

impl Principal {
    /// The server itself, for its own changes (agents going offline, demo mode).
    pub fn system() -> Principal {
        Principal {
            token_id: 0,
            role: Role::Admin,
            agent_id: None,
        }
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
        (Role::Admin, _) => true,
        (_, Action::Read) => true,
        (Role::Member, Action::CreateTask | Action::UpdateTask { .. } | Action::DeleteTask) => true,
        (Role::Agent, Action::UpdateTask { assignee_id }) => assignee_id.is_some() && assignee_id == p.agent_id,
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

/// The stored form of a token: its SHA-256, in hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Verified tokens by hash, and browser sessions by hash. Filled at start from
/// the database and kept in step by the Db actor when tokens are created or
/// revoked. A token created by the command line while the server runs is found
/// in the file on its first use.
#[derive(Default)]
pub struct TokenCache {
    by_hash: RwLock<HashMap<String, Principal>>,
    /// Browser sessions: token id and expiry (RFC 3339, comparable as text).
    sessions: RwLock<HashMap<String, (i64, String)>>,
    file: Option<Mutex<SqliteConnection>>,
}

impl TokenCache {
    /// A cache that looks up unknown tokens in the database file at `path`.
    pub fn with_file(path: &str) -> Result<TokenCache, String> {
        let conn = SqliteConnection::establish(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        Ok(TokenCache {
            file: Some(Mutex::new(conn)),
            ..TokenCache::default()
        })
    }

    pub fn insert(&self, hash: String, p: Principal) {
        self.by_hash.write().expect("token cache poisoned").insert(hash, p);
    }

    /// Forgets a token and every browser session made with it.
    pub fn remove_token(&self, token_id: i64) {
        self.by_hash
            .write()
            .expect("token cache poisoned")
            .retain(|_, p| p.token_id != token_id);
        self.sessions
            .write()
            .expect("session cache poisoned")
            .retain(|_, (t, _)| *t != token_id);
    }

    /// True if the token is live in the cache.
    pub fn has_token(&self, token_id: i64) -> bool {
        self.by_hash
            .read()
            .expect("token cache poisoned")
            .values()
            .any(|p| p.token_id == token_id)
    }

    pub fn insert_session(&self, hash: String, token_id: i64, expires_at: String) {
        self.sessions
            .write()
            .expect("session cache poisoned")
            .insert(hash, (token_id, expires_at));
    }

    pub fn remove_session(&self, hash: &str) {
        self.sessions.write().expect("session cache poisoned").remove(hash);
    }

    /// The principal of a presented token, if it is a live one.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        if let Some(p) = self.cached(&hash) {
            // A revocation by the command line reaches the file first; one
            // indexed read makes it count at once.
            // The Db actor's watch then drops it from the cache and closes its
            // sockets within half a second.
            if self.revoked_in_file(p.token_id) {
                return None;
            }
            return Some(p);
        }
        let p = self.look_up_file(&hash)?;
        self.insert(hash, p.clone());
        Some(p)
    }

    fn cached(&self, hash: &str) -> Option<Principal> {
        let map = self.by_hash.read().expect("token cache poisoned");
        let (stored, p) = map.get_key_value(hash)?;
        // The lookup is by equality of a hash of 256 random bits; the constant-time
        // compare keeps the last step free of timing differences too.
        bool::from(stored.as_bytes().ct_eq(hash.as_bytes())).then(|| p.clone())
    }

    fn revoked_in_file(&self, token_id: i64) -> bool {
        let Some(file) = self.file.as_ref() else { return false };
        let mut conn = file.lock().expect("token file poisoned");
        crate::db::queries::token_revoked(&mut conn, token_id).unwrap_or(false)
    }

    fn look_up_file(&self, hash: &str) -> Option<Principal> {
        let mut conn = self.file.as_ref()?.lock().expect("token file poisoned");
        let row = crate::db::queries::find_token_by_hash(&mut conn, hash).ok()??;
        if row.revoked_at.is_some() {
            return None;
        }
        Some(Principal {
            token_id: row.id,
            role: Role::parse(&row.role)?,
            agent_id: row.agent_id,
        })
    }

    /// The principal of a browser session cookie, if the session and its token
    /// are live.
    pub fn verify_session(&self, secret: &str) -> Option<Principal> {
        let hash = hash_token(secret);
        let (token_id, expires_at) = self
            .sessions
            .read()
            .expect("session cache poisoned")
            .get(&hash)?
            .clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if expires_at <= now {
            self.remove_session(&hash);
            return None;
        }
        let p = self
            .by_hash
            .read()
            .expect("token cache poisoned")
            .values()
            .find(|p| p.token_id == token_id)
            .cloned()?;
        (!self.revoked_in_file(token_id)).then_some(p)
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
