//! `taskwire mcp`: the taskwire tools for AI agent hosts, over the Model
//! Context Protocol on stdin and stdout (rmcp, the official SDK). It is a
//! client of a running server: every tool is a REST call with the token it was
//! started with, so the server's rules, events and errors apply unchanged.
//!
//! - [`api`]: the REST calls and their errors.
//! - [`tools`]: the tools a model calls.
//! - [`prompts`]: the "work on the next task" prompt.
//! - [`server`]: the server's description, instructions and resources.
//! - [`heartbeat`]: an agent token's heartbeat while the host runs it.

mod api;
mod heartbeat;
mod prompts;
mod server;
mod tools;

use rmcp::ServiceExt;

/// Serves MCP on stdin and stdout until stdin closes, acting on the server at
/// `url` with `token`; with an agent token, keeps the agent's heartbeat
/// meanwhile.
pub fn run(url: &str, token: &str) -> Result<(), Box<dyn std::error::Error>> {
    let api = api::Api::new(url, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ended = runtime.block_on(async {
        let heartbeat = tokio::spawn(heartbeat::keep(api.clone()));
        let served = async {
            let service = tools::Taskwire::new(api).serve(rmcp::transport::stdio()).await?;
            service.waiting().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
        .await;
        heartbeat.abort();
        served
    });
    // A read of stdin may still be blocked in its thread; nothing waits for it.
    runtime.shutdown_background();
    ended
}
