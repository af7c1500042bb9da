//! The `/import` client against the Mixpanel-compatible receiver: failed_records become
//! rejects while the rest counts as delivered, 413 splits the batch, bad credentials are
//! permanent, project-token auth works.

mod common;

use std::time::Duration;

use common::Fixture;
use wharf::destination::mixpanel::import::MixpanelImport;
use wharf::destination::mixpanel::{MixpanelConfig, ServiceAccount};
use wharf::receiver::ReceiverAuth;
use wharf::secret::Secret;
use wharf_operators::dataflow::RunControl;
use wharf_operators::record::EncodedRecords;
use wharf_pipelines::delivery::{deliver, RetryPolicy};
use wharf_pipelines::destination::{Destination, DestinationError};
use wharf_pipelines::governor::Governor;

fn config(host: &str, secret: &str) -> MixpanelConfig {
    MixpanelConfig {
        project_id: Some("42".into()),
        service_account: Some(ServiceAccount {
            username: "sa".into(),
            secret: Secret::new(secret),
        }),
        project_token: None,
        api_host: Some(host.into()),
        ..MixpanelConfig::default()
    }
}

/// An `/import` client with service-account credentials `sa:<secret>`.
fn client(host: &str, secret: &str) -> MixpanelImport {
    MixpanelImport::new(&config(host, secret), Duration::from_secs(10)).unwrap()
}

fn event(i: usize, time: i64, pad: usize) -> String {
    format!(
        r#"{{"event":"E","properties":{{"time":{time},"distinct_id":"u{i}","$insert_id":"id-{i}","pad":"{}"}}}}"#,
        "x".repeat(pad)
    )
}

fn records(events: &[String]) -> EncodedRecords {
    let mut r = EncodedRecords::default();
    for e in events {
        r.push(e.as_bytes());
    }
    r
}

fn sa_auth() -> ReceiverAuth {
    ReceiverAuth::ServiceAccount {
        username: "sa".into(),
        secret: "right".into(),
        project_id: "42".into(),
    }
}

#[test]
fn failed_records_become_rejects_and_the_rest_is_delivered() {
    let fx = Fixture::new();
    let receiver = fx.receiver("recv", sa_auth());
    let client = client(&receiver.base_url(), "right");
    let batch = records(&[
        event(1, 1_700_000_000_000, 0),
        event(2, 10, 0),
        event(3, 1_700_000_000_000, 0),
    ]);
    let outcome = fx.rt.block_on(client.send(&batch)).unwrap();
    assert_eq!(outcome.delivered, 2);
    assert_eq!(outcome.rejects.len(), 1);
    assert_eq!(outcome.rejects[0].insert_id.as_deref(), Some("id-2"));
    assert!(
        outcome.rejects[0].reason.contains("properties.time"),
        "{:?}",
        outcome.rejects
    );
    assert_eq!(receiver.stats().events_accepted, 2);
}

#[test]
fn a_413_is_split_and_every_record_delivered() {
    let fx = Fixture::new();
    let receiver = fx.receiver("recv", sa_auth());
    let client = client(&receiver.base_url(), "right");
    // 1,500 records of ~8 KB: 12 MB uncompressed, over the 10 MB limit.
    let events: Vec<String> = (0..1500)
        .map(|i| event(i, 1_700_000_000_000, 8000))
        .collect();
    let batch = records(&events);
    let first = fx.rt.block_on(client.send(&batch));
    assert!(
        matches!(first, Err(DestinationError::TooLarge { .. })),
        "{first:?}"
    );
    let control = RunControl::new(10);
    let outcome = fx
        .rt
        .block_on(deliver(
            &client,
            batch,
            &RetryPolicy::default(),
            &Governor::new(4),
            &control,
        ))
        .unwrap();
    assert_eq!(outcome.delivered, 1500);
    assert!(outcome.rejects.is_empty());
    assert_eq!(receiver.stats().unique_events, 1500);
}

#[test]
fn bad_credentials_are_permanent_and_project_tokens_work() {
    let fx = Fixture::new();
    let receiver = fx.receiver("recv", sa_auth());
    let wrong = client(&receiver.base_url(), "wrong");
    let batch = records(&[event(1, 1_700_000_000_000, 0)]);
    match fx.rt.block_on(wrong.send(&batch)) {
        Err(e @ DestinationError::Permanent { .. }) => {
            assert!(!e.is_transient());
            assert!(!e.to_string().contains("wrong"), "no secret in errors: {e}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(fx.rt.block_on(wrong.check()).is_err());

    let token_receiver = fx.receiver(
        "recv2",
        ReceiverAuth::ProjectToken {
            token: "tok".into(),
        },
    );
    let mut cfg = config(&token_receiver.base_url(), "unused");
    cfg.service_account = None;
    cfg.project_token = Some(Secret::new("tok"));
    let client = MixpanelImport::new(&cfg, Duration::from_secs(10)).unwrap();
    assert_eq!(fx.rt.block_on(client.send(&batch)).unwrap().delivered, 1);
    fx.rt.block_on(client.check()).unwrap();
}
