//! The receiver checked against Mixpanel's official Python library (`mixpanel` on PyPI),
//! so that it cannot drift into agreeing with wharf alone: events (`/import`), user profiles
//! (`/engage`) and group profiles (`/groups`). `.ci/run` installs the library
//! into a venv; set `WHARF_PYTHON` to use another interpreter that has it.

mod common;

use std::net::SocketAddr;

use common::{text, Fixture};
use serde_json::{json, Value};
use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig};

fn python() -> String {
    std::env::var("WHARF_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/wharf/venv/bin/python")
    })
}

#[test]
fn official_python_library_imports_into_the_receiver() {
    let fx = Fixture::new();
    let receiver = fx.receiver(
        "recv",
        ReceiverAuth::ServiceAccount {
            username: "sa-user".into(),
            secret: "sa-secret".into(),
            project_id: "777".into(),
        },
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/official_client_import.py"
    );
    let out = std::process::Command::new(python())
        .args([script, &receiver.base_url(), "sa-user", "sa-secret", "777"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run .ci/run to install the venv",
                python()
            )
        });
    assert!(out.status.success(), "{}", text(&out));
    let stats = receiver.stats();
    assert_eq!(stats.events_accepted, 13, "{stats:?}");
    assert_eq!(stats.unique_events, 13);
    let events = receiver.events().unwrap();
    let single: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "Official Single")
        .collect();
    assert_eq!(single.len(), 3);
    assert_eq!(single[0]["properties"]["unicode"], "Zürich 東京");
    assert_eq!(single[0]["properties"]["mp_lib"], "python");

    // Wrong credentials: the library reports the failure.
    let out = std::process::Command::new(python())
        .args([script, &receiver.base_url(), "sa-user", "wrong", "777"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().events_accepted, 13);
}

#[test]
fn official_python_library_updates_profiles_in_the_receiver() {
    let fx = Fixture::new();
    let token = "0123456789abcdef0123456789abcdef";
    let mut config = ReceiverConfig::new(fx.path("recv"), ReceiverAuth::AnyCredentials);
    config.project_token = Some(token.into());
    let receiver = fx
        .rt
        .block_on(Receiver::start(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("receiver");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/official_client_profiles.py"
    );
    let run = |token: &str| {
        std::process::Command::new(python())
            .args([script, &receiver.base_url(), token])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run .ci/run to install the venv",
                    python()
                )
            })
    };
    let out = run(token);
    assert!(out.status.success(), "{}", text(&out));
    let profiles = receiver.profiles();
    assert_eq!(
        profiles.keys().collect::<Vec<_>>(),
        ["batch-0", "batch-1", "batch-2", "batch-3", "batch-4", "user-1"]
    );
    let user = Value::Object(profiles["user-1"].clone());
    assert_eq!(user, json!({"plan": "pro", "first": "2024-01-01"}));
    // Without $ignore_time the library's $time becomes "Updated at".
    assert_eq!(profiles["batch-3"]["i"], 3);
    assert!(profiles["batch-3"]["$last_seen"].is_string());
    let groups = serde_json::to_value(receiver.groups()).unwrap();
    assert_eq!(groups, json!({"company": {"acme": {"name": "Acme"}}}));

    // A token of another project: every update fails and the library reports it.
    let out = run("ffffffffffffffffffffffffffffffff");
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(receiver.profiles(), profiles);
    let stats = receiver.endpoint_stats();
    assert_eq!(stats.engage.updates_accepted, 10, "{stats:?}");
    assert_eq!(stats.groups.updates_accepted, 2, "{stats:?}");
}
