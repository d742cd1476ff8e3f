//! The example agent in docs/agents.md is the one that compiles here.

#[test]
fn the_documented_agent_is_examples_agent_rs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/../../docs/agents.md")).unwrap();
    let rust = &doc[doc.find("## Rust").expect("a Rust section")..];
    let start = rust.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let block = &rust[start..start + rust[start..].find("```").unwrap()];
    let example = std::fs::read_to_string(format!("{root}/examples/agent.rs")).unwrap();
    let code: Vec<&str> = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .collect();
    assert_eq!(
        block.trim_end(),
        code.join("\n").trim_end(),
        "docs/agents.md and examples/agent.rs differ"
    );
}
