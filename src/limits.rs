//! Limits that keep one client from starving the others: token buckets for
//! frames, REST requests and calls, socket counts, read budgets, and the
//! outbound bytes queued for each token's sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// A token bucket: `rate` per second, holding one second's worth.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
    /// Since when the bucket has been refusing, with no second free of refusals.
    pub over_since: Option<Instant>,
    last_refused: Option<Instant>,
}

impl Bucket {
    pub fn new(rate: u32) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            at: Instant::now(),
            over_since: None,
            last_refused: None,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        // A whole second without a refusal ends a stretch of abuse; the odd
        // frame let through by the refill does not.
        if self
            .last_refused
            .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.over_since = None;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.over_since.get_or_insert(now);
            self.last_refused = Some(now);
            false
        }
    }

    /// True once requests have been refused for `d` with no second's break.
    pub fn over_for(&self, d: Duration) -> bool {
        self.over_since.is_some_and(|t| t.elapsed() >= d)
    }
}

/// A bucket per token, shared by every thread.
struct TokenBuckets {
    rate: u32,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

impl TokenBuckets {
    fn new(rate: u32) -> Self {
        TokenBuckets {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token from `token_id`'s bucket, if it has one.
    fn take(&self, token_id: i64) -> bool {
        let mut buckets = self.buckets.lock().expect("token buckets poisoned");
        if buckets.len() > 10_000 {
            // Full buckets of idle tokens carry no information.
            buckets.retain(|_, b| b.over_since.is_some());
        }
        buckets.entry(token_id).or_insert_with(|| Bucket::new(self.rate)).take()
    }
}

/// REST requests per second per token.
pub struct RestLimiter(TokenBuckets);

impl RestLimiter {
    pub fn new(rate: u32) -> RestLimiter {
        RestLimiter(TokenBuckets::new(rate))
    }

    /// Counts one request of `p`; `rate_limited` when its bucket is empty.
    pub fn check(&self, p: &Principal) -> Result<(), ApiError> {
        if self.0.take(p.token_id) {
            Ok(())
        } else {
            Err(ApiError::rate_limited(format!(
                "more than {} requests per second with this token",
                self.0.rate
            )))
        }
    }
}

/// Calls (writes) per second per member or agent token, over all its sockets
/// and REST together, so that one client's loop cannot flood every
/// subscriber with events: a call over it is answered `rate_limited` and not
/// executed. Admin tokens are not limited, as with reads: they may revoke
/// any token and make new ones, and the load generator writes with one.
pub struct CallLimiter(TokenBuckets);

impl CallLimiter {
    pub fn new(calls_per_second: u32) -> Self {
        CallLimiter(TokenBuckets::new(calls_per_second))
    }

    /// Counts one call of `p`; `rate_limited` when its bucket is empty.
    pub fn check(&self, p: &Principal) -> Result<(), ApiError> {
        if p.role == Role::Admin || self.0.take(p.token_id) {
            Ok(())
        } else {
            Err(ApiError::rate_limited(format!(
                "more than {} calls per second with this token; slow down",
                self.0.rate
            )))
        }
    }
}

/// The outbound bytes queued for each token's sockets, across all worker
/// threads: each socket's queue adds what it queues and takes off what it
/// hands to the connection or drops, and a frame that would take its token
/// over the bound is refused (the socket that would queue it closes 1013).
/// Admin tokens are bounded too: memory is memory.
pub struct TokenQueues {
    max_per_token: usize,
    tokens: Arc<QueueMap>,
}

/// Each token's counter, while one of its sockets' queues holds it.
type QueueMap = Mutex<HashMap<i64, Weak<TokenQueue>>>;

impl TokenQueues {
    pub fn new(max_per_token: usize) -> Self {
        TokenQueues {
            max_per_token,
            tokens: Arc::default(),
        }
    }

    /// The counter of `token_id`, shared by all its sockets; it lives as long
    /// as one of their queues does.
    pub fn for_token(&self, token_id: i64) -> Arc<TokenQueue> {
        let mut tokens = self.tokens.lock().expect("token queues poisoned");
        if let Some(q) = tokens.get(&token_id).and_then(Weak::upgrade) {
            return q;
        }
        let q = Arc::new(TokenQueue {
            bytes: AtomicUsize::new(0),
            max: self.max_per_token,
            registered: Some((token_id, Arc::downgrade(&self.tokens))),
        });
        tokens.insert(token_id, Arc::downgrade(&q));
        q
    }

    /// Bytes queued for all sockets.
    pub fn total(&self) -> usize {
        // Upgraded under the lock, dropped after it: dropping the last
        // counter of a token takes the lock.
        let live: Vec<_> = {
            let tokens = self.tokens.lock().expect("token queues poisoned");
            tokens.values().filter_map(Weak::upgrade).collect()
        };
        live.iter().map(|q| q.bytes()).sum()
    }
}

/// One token's queued outbound bytes; see [`TokenQueues`].
pub struct TokenQueue {
    bytes: AtomicUsize,
    max: usize,
    /// The token and the map it is in, to leave it when the last socket's
    /// queue is gone.
    registered: Option<(i64, Weak<QueueMap>)>,
}

impl TokenQueue {
    /// A counter of its own, in no map (for tests).
    pub fn standalone(max: usize) -> Arc<Self> {
        Arc::new(TokenQueue {
            bytes: AtomicUsize::new(0),
            max,
            registered: None,
        })
    }

    /// Counts `n` more bytes unless that takes the token over its bound.
    pub fn try_add(&self, n: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    /// True if `n` more bytes would fit under the bound.
    pub fn fits(&self, n: usize) -> bool {
        self.bytes().saturating_add(n) <= self.max
    }

    /// Counts `n` more bytes whatever the bound (control frames: a close
    /// frame must go out).
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes left the queue (written out or dropped).
    pub fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for TokenQueue {
    fn drop(&mut self) {
        let Some((token_id, map)) = &self.registered else {
            return;
        };
        let Some(map) = map.upgrade() else { return };
        let mut tokens = map.lock().expect("token queues poisoned");
        // Only if no new counter of the token took this one's place.
        if tokens.get(token_id).is_some_and(|w| w.strong_count() == 0) {
            tokens.remove(token_id);
        }
    }
}

/// Open sockets, in total and per token, against the configured limits.
#[derive(Default)]
pub struct SocketCounts {
    inner: Mutex<(usize, HashMap<i64, usize>)>,
    max_total: usize,
    max_per_token: usize,
}

impl SocketCounts {
    pub fn new(max_total: usize, max_per_token: usize) -> Self {
        SocketCounts {
            inner: Mutex::default(),
            max_total,
            max_per_token,
        }
    }

    /// Takes a socket slot for `p`, or says why not. Admin tokens count only
    /// toward the total.
    pub fn acquire(&self, p: &Principal) -> Result<(), ApiError> {
        let mut g = self.inner.lock().expect("socket counts poisoned");
        if g.0 >= self.max_total {
            return Err(ApiError::unavailable("the server holds as many sockets as it may"));
        }
        if p.role != Role::Admin {
            let n = g.1.entry(p.token_id).or_default();
            if *n >= self.max_per_token {
                return Err(ApiError::unavailable("this token holds as many sockets as it may"));
            }
            *n += 1;
        }
        g.0 += 1;
        Ok(())
    }

    /// Gives back a slot taken by [`SocketCounts::acquire`].
    pub fn release(&self, p: &Principal) {
        let mut g = self.inner.lock().expect("socket counts poisoned");
        g.0 = g.0.saturating_sub(1);
        if p.role != Role::Admin {
            if let Some(n) = g.1.get_mut(&p.token_id) {
                *n -= 1;
                if *n == 0 {
                    g.1.remove(&p.token_id);
                }
            }
        }
    }
}

/// Rows each token may have read for it per second (snapshots, lists,
/// change-log scans), so one client's reads cannot take the readers from the
/// others. A read is refused once the token's budget is spent, and charged
/// what it read after it ran: one large read goes through, the next waits
/// for the budget to refill. Admin tokens are not limited, as with sockets.
pub struct ReadBudget {
    rate: f64,
    inner: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl ReadBudget {
    pub fn new(rows_per_second: u32) -> Self {
        ReadBudget {
            rate: rows_per_second as f64,
            inner: Mutex::default(),
        }
    }

    fn refilled(&self, entry: &mut (f64, Instant)) {
        let now = Instant::now();
        entry.0 = (entry.0 + now.duration_since(entry.1).as_secs_f64() * self.rate).min(self.rate);
        entry.1 = now;
    }

    /// Refuses a read while the token's budget is spent.
    pub fn check(&self, p: &Principal) -> Result<(), ApiError> {
        if p.role == Role::Admin {
            return Ok(());
        }
        let mut all = self.inner.lock().expect("read budget poisoned");
        let entry = all.entry(p.token_id).or_insert((self.rate, Instant::now()));
        self.refilled(entry);
        if entry.0 > 0.0 {
            Ok(())
        } else {
            Err(ApiError::rate_limited(
                "this token read too many rows in the last second; slow down",
            ))
        }
    }

    /// Charges a read that ran.
    pub fn charge(&self, p: &Principal, rows: usize) {
        if p.role == Role::Admin || rows == 0 {
            return;
        }
        let mut all = self.inner.lock().expect("read budget poisoned");
        let entry = all.entry(p.token_id).or_insert((self.rate, Instant::now()));
        self.refilled(entry);
        entry.0 -= rows as f64;
        // Forget tokens whose budget is full again, so the map holds only
        // the tokens reading now.
        if all.len() > 1024 {
            let rate = self.rate;
            all.retain(|_, (left, at)| *left + at.elapsed().as_secs_f64() * rate < rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, token_id: i64) -> Principal {
        Principal {
            token_id,
            role,
            agent_id: None,
            name: std::sync::Arc::from("p"),
        }
    }

    #[test]
    fn a_spent_read_budget_refuses_until_it_refills() {
        let budget = ReadBudget::new(100);
        let member = p(Role::Member, 1);
        assert!(budget.check(&member).is_ok());
        budget.charge(&member, 250);
        assert_eq!(
            budget.check(&member).unwrap_err().code,
            crate::error::ErrorCode::RateLimited
        );
        assert!(
            budget.check(&p(Role::Member, 2)).is_ok(),
            "another token has its own budget"
        );
        budget.charge(&p(Role::Admin, 3), 1_000_000);
        assert!(budget.check(&p(Role::Admin, 3)).is_ok());
    }

    #[test]
    fn bucket_holds_one_second() {
        let mut b = Bucket::new(3);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        assert!(b.over_since.is_some());
    }

    #[test]
    fn a_refill_does_not_end_a_stretch_of_abuse() {
        let mut b = Bucket::new(1000);
        while b.take() {}
        let since = b.over_since;
        // Wait for one token to come back; the stretch goes on.
        while !b.take() {}
        assert_eq!(b.over_since, since);
    }

    #[test]
    fn calls_are_limited_per_token_and_admins_are_not() {
        let calls = CallLimiter::new(3);
        let agent = p(Role::Agent, 1);
        assert!((0..3).all(|_| calls.check(&agent).is_ok()), "a second's worth");
        assert_eq!(
            calls.check(&agent).unwrap_err().code,
            crate::error::ErrorCode::RateLimited
        );
        assert!(calls.check(&p(Role::Member, 2)).is_ok(), "another token has its own");
        assert!((0..100).all(|_| calls.check(&p(Role::Admin, 3)).is_ok()));
    }

    #[test]
    fn queued_bytes_are_bounded_per_token_and_shared_by_its_sockets() {
        let queues = TokenQueues::new(100);
        let a = queues.for_token(1);
        let a2 = queues.for_token(1);
        let b = queues.for_token(2);
        assert!(a.try_add(60));
        assert!(!a2.try_add(41), "the token's sockets share one bound");
        assert!(a2.try_add(40));
        assert!(b.try_add(100), "another token has its own");
        assert_eq!(queues.total(), 200);
        a.sub(60);
        assert!(a2.fits(60) && !a2.fits(61));
        a.add(1000);
        assert_eq!(a2.bytes(), 1040, "control frames are counted past the bound");
        drop((a, a2));
        assert!(
            queues.tokens.lock().unwrap().get(&1).is_none(),
            "the last socket's end forgets the token"
        );
        assert_eq!(queues.for_token(1).bytes(), 0);
    }

    #[test]
    fn socket_counts_per_token_and_total() {
        let c = SocketCounts::new(3, 1);
        assert!(c.acquire(&p(Role::Member, 1)).is_ok());
        assert!(c.acquire(&p(Role::Member, 1)).is_err());
        assert!(c.acquire(&p(Role::Admin, 2)).is_ok());
        assert!(c.acquire(&p(Role::Admin, 2)).is_ok());
        assert!(c.acquire(&p(Role::Admin, 2)).is_err());
        c.release(&p(Role::Member, 1));
        assert!(c.acquire(&p(Role::Member, 1)).is_ok());
    }
}
