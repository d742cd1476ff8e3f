//! The MCP server's face: what it says it offers (tools, the prompt, the
//! resources), its instructions to the model, and the resources: the task
//! board, the agents and each task, read from the server when asked.

use rmcp::model::{
    ErrorCode, Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{prompt_handler, tool_handler, ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::api::ApiError;
use super::tools::{items, short_task, sort_by_urgency, Taskwire};

const INSTRUCTIONS: &str = "\
Tools for the taskwire task board, shared by people and AI agents, who see every change live. \
Tasks have a status (todo, in_progress, blocked, review, done), a priority (0 low to 3 urgent), \
an assignee (an agent id, or null) and a progress in percent. Typical use: `whoami`, then \
`list_tasks` to find your tasks or unassigned `todo` ones, `claim_task`, `get_task`, `add_note` \
as you work, and `update_task` with status `done` when finished. Errors carry the server's code \
(`conflict`, `forbidden`, `not_found`, `invalid`...) and a message saying what went wrong.";

const BOARD: &str = "taskwire://tasks";
const AGENTS: &str = "taskwire://agents";
const TASK: &str = "taskwire://tasks/";

/// Tasks the board resource lists at most.
const BOARD_MAX: usize = 500;

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for Taskwire {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("taskwire", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(BOARD, "tasks")
                .with_title("Task board")
                .with_description("The open tasks (not done), most urgent first, and how many tasks have each status")
                .with_mime_type("application/json"),
            Resource::new(AGENTS, "agents")
                .with_title("Agents")
                .with_description("Every agent with its status and current task")
                .with_mime_type("application/json"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("taskwire://tasks/{id}", "task")
                .with_title("A task")
                .with_description("One task in full")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let value = match uri.as_str() {
            BOARD => self.api.list_tasks(None, None).await.map(|list| board(&list)),
            AGENTS => self
                .api
                .list_agents()
                .await
                .map(|list| json!({ "agents": list["items"] })),
            other => match other.strip_prefix(TASK).and_then(|id| id.parse::<i64>().ok()) {
                Some(id) => self.api.task(id).await,
                None => return Err(ErrorData::resource_not_found(format!("no resource {uri}"), None)),
            },
        };
        let value = value.map_err(|e| resource_error(&uri, e))?;
        let contents = ResourceContents::text(value.to_string(), uri).with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// The board: counts by status, and the open tasks, most urgent first.
fn board(list: &Value) -> Value {
    let all = items(list);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in all {
        *counts.entry(t["status"].as_str().unwrap_or("?")).or_default() += 1;
    }
    let mut open: Vec<&Value> = all.iter().filter(|t| t["status"] != "done").collect();
    sort_by_urgency(&mut open);
    let mut out = json!({
        "counts": counts,
        "open_tasks": open.iter().take(BOARD_MAX).map(|t| short_task(t)).collect::<Vec<_>>(),
    });
    if open.len() > BOARD_MAX {
        out["more"] = json!(format!(
            "{} more open tasks; use list_tasks with filters",
            open.len() - BOARD_MAX
        ));
    }
    out
}

fn resource_error(uri: &str, e: ApiError) -> ErrorData {
    let data = Some(json!({ "error": e }));
    if e.code == "not_found" {
        return ErrorData::resource_not_found(format!("{uri}: {}", e.message), data);
    }
    ErrorData::new(ErrorCode::INTERNAL_ERROR, format!("{uri}: {e}"), data)
}
