use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_rest_write_reaches_a_socket_subscriber() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    let r = ws.subscribe("tasks").await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["snapshot"], json!([]));
    let task = app.create_task("hello").await;
    let ev = ws.next_event().await;
    assert_eq!(ev["event"], "task.created");
    assert_eq!(ev["data"], task);
    assert_eq!(ev["seq"], 1);
}
