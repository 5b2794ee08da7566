//! The WIT is the law: every limit it states in words is checked against its constant here,
//! and its `tcp-state` enum against [`State`]'s order.

extern crate std;
use crate::state::{State, DIRECTIONS, EVENTS, STATES, TCP_STATES, TRANSITIONS};
use crate::*;
use std::format;
use std::string::String;
use std::vec::Vec;

const WIT: &str = include_str!("../../sdk/wit/plugin.wit");

/// The WIT with doc-comment markers and line breaks folded, so a phrase split over two
/// lines still matches.
fn prose() -> String {
    WIT.lines()
        .map(|l| l.trim().trim_start_matches("///").trim())
        .collect::<Vec<_>>()
        .join(" ")
}

fn says(phrase: &str) {
    assert!(
        prose().contains(phrase),
        "sdk/wit/plugin.wit no longer says {phrase:?}: a limit and its constant in ringvs-abi diverged"
    );
}

#[test]
fn package_version() {
    assert!(WIT.contains(&format!("package ringvs:plugin@{WIT_VERSION};")));
    assert_eq!(wit_interface!("scheduler"), "ringvs:plugin/scheduler@0.2.0");
}

#[test]
fn state_table_shape() {
    says(&format!(
        "{TRANSITIONS} next states: {DIRECTIONS} directions (input, output, input-only) × \
         {EVENTS} events (syn, fin, ack, rst) × {TCP_STATES} current states"
    ));
    says(&format!(
        "Timeout per state in seconds, {STATES} entries (the {TCP_STATES} TCP states, then UDP)"
    ));
}

#[test]
fn load_stride() {
    let words = ["zero", "one", "two", "three", "four"];
    says(&format!(
        "`load` holds {} numbers per realserver",
        words[LOAD_STRIDE]
    ));
}

#[test]
fn defense_limits() {
    says(&format!("(at most {MAX_TOP_SOURCES})"));
    says(&format!("over a day ({MAX_BLOCK_SECS} seconds)"));
    says(&format!("already has {MAX_BLOCKS} blocks"));
    says(&format!("at most {MAX_TICK_ACTIONS} actions of one tick"));
    says(&format!("at most {MAX_TICK_DROPS} connection ids"));
    says(&format!("at most {MAX_TICK_SCAN} table slots per tick"));
    says(&format!("One call visits at most {MAX_SCAN_SLOTS}"));
    says(&format!("scan on from `start + {MAX_SCAN_SLOTS}`"));
}

#[test]
fn log_limits() {
    says(&format!(
        "at most {MAX_LOG_PER_SEC} messages per second per instance"
    ));
    says(&format!("A message over {MAX_LOG_BYTES} bytes is cut"));
}

#[test]
fn tcp_state_enum_order() {
    let body = WIT
        .split("enum tcp-state {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .expect("sdk/wit/plugin.wit has enum tcp-state");
    let names: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("///"))
        .map(|l| l.trim_end_matches(','))
        .collect();
    let ours: Vec<String> = State::ALL[..TCP_STATES]
        .iter()
        .map(|s| s.key().replace('_', "-"))
        .collect();
    assert_eq!(names, ours);
}
