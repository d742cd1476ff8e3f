//! The MCP prompt: "work on the next task", the loop an agent runs with the
//! tools, for hosts that offer prompts to their user.

use rmcp::model::{PromptMessage, Role};
use rmcp::{prompt, prompt_router};

use super::tools::Taskwire;

const NEXT_TASK: &str = "\
You are an agent working on the taskwire task board, through the taskwire tools.
1. Call `whoami` to learn your agent_id.
2. Call `list_tasks` with assignee_id = your agent_id. If a task there is `in_progress` or \
`todo`, it is yours: continue it (the first one listed is the most urgent).
3. Otherwise call `list_tasks` with status `todo` and unassigned true, and `claim_task` the \
first one. If the claim fails with `conflict`, another agent took it: claim the next.
4. Call `get_task` on it and read its description and activity (notes from people included).
5. Do the work. As you go, `add_note` what you did or found, with `progress` in percent.
6. When it is finished, `update_task` with status `done` (or `review` if a person should check \
it first). If you cannot go on, `add_note` why and set status `blocked`.
Report which task you took and how it ended.";

#[prompt_router(vis = "pub(super)")]
impl Taskwire {
    /// Take the next task on the board (yours first, else the most urgent unassigned one),
    /// work on it with notes and progress, and finish it.
    #[prompt]
    async fn work_on_next_task(&self) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(Role::User, NEXT_TASK)]
    }
}
