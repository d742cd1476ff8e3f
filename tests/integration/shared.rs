//! Small helpers for tests on either harness (`common` or `child`).
#![allow(dead_code)]

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

/// A response header as text, if present.
pub fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// The `Taskwire-Seq` of a REST response, if it has one.
pub fn seq_header(res: &reqwest::Response) -> Option<i64> {
    header(res, "Taskwire-Seq").map(|s| s.parse().unwrap())
}

/// The `Taskwire-Seq` of a REST response that must have one.
pub fn seq_of(res: &reqwest::Response) -> i64 {
    seq_header(res).expect("a Taskwire-Seq header")
}
