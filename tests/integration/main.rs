//! The integration tests, as one test binary: each talks to a real server on
//! port 0 (`common`) or to the real binary as a child process (`child`).
//!
//! One binary rather than one per file: each test binary links the whole
//! dependency tree, and twenty of them took gigabytes of disk and most of the
//! build's link time.

mod child;
mod common;
mod shared;

mod activity;
mod admin_cli;
mod agent_sockets;
mod atomic;
mod auth_basic;
mod browser;
mod calls;
mod close;
mod consistency;
mod crash;
mod errors;
mod filtered;
mod fuzz;
mod hostile;
mod js_agent;
mod liveness;
mod mcp;
mod not_ours;
mod presence;
mod python_client;
mod readonly;
mod reads;
mod remote_cli;
mod rest_api;
mod resume;
mod security;
mod shutdown;
mod slow_client;
mod smoke;
mod storage;
mod subscriptions;
mod windows;
