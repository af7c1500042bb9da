//! No loss under faults: 30% of `/import` requests fail (429 with Retry-After, 503, or a 502
//! or a dropped connection after the events were stored). The run retries until everything
//! is acknowledged, commits once, and the receiver holds every row exactly once by Mixpanel's
//! deduplication key.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{events_config, text, Fixture};
use serde_json::Value;
use wharf::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig};

#[test]
fn thirty_percent_failing_requests_lose_and_duplicate_nothing() {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE ev AS SELECT i AS id, 'E' || (i % 5)::VARCHAR AS name,
                TIMESTAMP '2024-01-01' + to_seconds(i) AS ts, 'u' || (i % 977)::VARCHAR AS uid
         FROM range(60000) t(i)",
    );
    let mut config = ReceiverConfig::new(fx.path("recv"), ReceiverAuth::AnyCredentials);
    config.faults = Some(Faults {
        rate: 0.3,
        seed: 11,
        retry_after: Duration::from_secs(1),
    });
    let receiver = fx
        .rt
        .block_on(Receiver::start(
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .unwrap();
    fx.write_config(
        "wharf.toml",
        &events_config(
            ".state",
            &receiver.base_url(),
            "ev",
            "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\nkey_columns = [\"id\"]",
        ),
    );
    let out = fx.wharf(&["sync", "s", "--workers", "2", "--summary-json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["delivered"], 60000, "{summary}");
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    let stats = receiver.stats();
    assert_eq!(stats.unique_events, 60000, "{stats:?}");
    assert!(
        stats.events_accepted > 60000,
        "some answers were lost after storing: {stats:?}"
    );
    // Committed once: a second run has nothing to send.
    let out = fx.wharf(&["sync", "s", "--summary-json"], &[]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows_read"], 0, "{summary}");
}
