//! The receiver checked against Mixpanel's official Python library (`mixpanel` on PyPI),
//! so that it cannot drift into agreeing with wharf alone. `.ci/run` installs the library
//! into a venv; set `WHARF_PYTHON` to use another interpreter that has it.

mod common;

use common::{text, Fixture};
use wharf::destination::mixpanel::receiver::ReceiverAuth;

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
