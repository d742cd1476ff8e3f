//! Small helpers for tests on either harness (`common` or `child`).

use serde_json::Value;
use std::collections::BTreeMap;

/// Entities by id: the `items` of a REST list, or a snapshot array.
pub fn by_id(items: &Value) -> BTreeMap<i64, Value> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list of entities: {items}"))
        .iter()
        .map(|t| (t["id"].as_i64().expect("id"), t.clone()))
        .collect()
}
