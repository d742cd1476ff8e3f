//! The client against a real server on port 0: calls and typed errors,
//! subscriptions that resume across drops and restarts, op_id re-sends,
//! revocation, the agent's heartbeat.

mod agent;
mod calls;
mod common;
mod docs;
mod resume;
