//! User profiles (`/engage`), group profiles (`/groups`) and lookup tables
//! (`PUT /lookup-tables/{id}`) over real HTTP: wharf's clients against the
//! Mixpanel-compatible receiver, the receiver's answer shapes, delivery through the shared
//! retry policy under injected faults, and a restart on the same data directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use wharf::destination::mixpanel::engage::{MixpanelProfiles, ProfileEndpoint};
use wharf::destination::mixpanel::lookup::{
    csv_field, FlushRetry, MixpanelLookupTable, LOOKUP_TABLE_MAX_BYTES,
};
use wharf::destination::mixpanel::{MixpanelConfig, ServiceAccount};
use wharf::receiver::{Faults, LookupTable, Receiver, ReceiverAuth, ReceiverConfig, SlowResponses};
use wharf::secret::Secret;
use wharf_operators::dataflow::RunControl;
use wharf_operators::record::EncodedRecords;
use wharf_pipelines::delivery::{deliver, RetryPolicy};
use wharf_pipelines::destination::{Destination, DestinationError};
use wharf_pipelines::governor::Governor;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const TABLE: &str = "55b4fb2b-e8de-466c-930f-8b36640b9b5e";

/// Fails a test that runs longer than a minute instead of hanging.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test finished within 60 s")
}

fn receiver_config(dir: &Path) -> ReceiverConfig {
    let mut config = ReceiverConfig::new(
        dir,
        ReceiverAuth::ServiceAccount {
            username: "sa".into(),
            secret: "sa-secret".into(),
            project_id: "42".into(),
        },
    );
    config.project_token = Some(TOKEN.into());
    config
}

async fn start(config: ReceiverConfig) -> Receiver {
    Receiver::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("receiver starts")
}

fn mixpanel(host: &str) -> MixpanelConfig {
    MixpanelConfig {
        project_id: Some("42".into()),
        service_account: Some(ServiceAccount {
            username: "sa".into(),
            secret: Secret::new("sa-secret"),
        }),
        project_token: Some(Secret::new(TOKEN)),
        api_host: Some(host.into()),
        ..MixpanelConfig::default()
    }
}

fn profiles_client(r: &Receiver, endpoint: ProfileEndpoint) -> MixpanelProfiles {
    MixpanelProfiles::new(&mixpanel(&r.base_url()), endpoint, Duration::from_secs(10)).unwrap()
}

fn records(updates: &[Value]) -> EncodedRecords {
    let mut r = EncodedRecords::default();
    for u in updates {
        r.push(u.to_string().as_bytes());
    }
    r
}

/// A user update with the project token and `$ignore_time` (so profiles are exact).
fn user(id: &str, op: &str, value: Value) -> Value {
    json!({"$token": TOKEN, "$distinct_id": id, op: value, "$ignore_time": true})
}

fn group(key: &str, id: impl Into<Value>, op: &str, value: Value) -> Value {
    let id: Value = id.into();
    json!({"$token": TOKEN, "$group_key": key, "$group_id": id, op: value})
}

async fn get(r: &Receiver, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", r.base_url()))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_jitter: Duration::from_millis(10),
        give_up_after: Duration::from_secs(40),
        concurrency: 4,
        ..RetryPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engage_operations_are_applied_and_visible() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let r = start(receiver_config(dir.path())).await;
        let client = profiles_client(&r, ProfileEndpoint::Users);
        let batch = records(&[
            user("u1", "$set", json!({"plan": "pro", "seats": 3, "tmp": "x"})),
            user(
                "u1",
                "$set_once",
                json!({"plan": "free", "first_seen": "2024-01-01"}),
            ),
            user("u1", "$unset", json!(["tmp"])),
            user("u1", "$add", json!({"seats": 2})),
            user("u1", "$union", json!({"tags": ["a", "b"]})),
            user("u1", "$union", json!({"tags": ["b", "c"]})),
            user("u1", "$remove", json!({"tags": "a"})),
            user("u2", "$set", json!({"plan": "free"})),
            user("u2", "$delete", Value::Null),
            user("u3", "$unset", json!(["nothing"])),
            json!({"$token": TOKEN, "$distinct_id": 7, "$set": {"n": 1}, "$time": 1_700_000_000}),
        ]);
        let outcome = client.send(&batch).await.unwrap();
        assert_eq!(
            (outcome.delivered, outcome.rejects.len()),
            (11, 0),
            "{outcome:?}"
        );

        let mut want = Map::new();
        want.insert(
            "u1".into(),
            json!({"plan": "pro", "seats": 5, "first_seen": "2024-01-01", "tags": ["b", "c"]}),
        );
        // Without $ignore_time Mixpanel keeps "Updated at"; $time sets it.
        want.insert(
            "7".into(),
            json!({"n": 1, "$last_seen": "2023-11-14T22:13:20"}),
        );
        let (status, served) = get(&r, "/wharf/profiles").await;
        assert_eq!(status, 200);
        assert_eq!(served, Value::Object(want.clone()));
        let held: Map<String, Value> = r
            .profiles()
            .into_iter()
            .map(|(id, p)| (id, Value::Object(p)))
            .collect();
        assert_eq!(held, want);
        let stats = r.endpoint_stats().engage;
        assert_eq!((stats.requests, stats.updates_accepted), (1, 11));
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_updates_become_rejects_and_the_rest_is_delivered() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let r = start(receiver_config(dir.path())).await;
        let client = profiles_client(&r, ProfileEndpoint::Users);
        let batch = records(&[
            user("ok-1", "$set", json!({"a": 1})),
            json!({"$token": TOKEN, "$set": {"a": 1}}),
            json!({"$token": TOKEN, "$distinct_id": "two-ops", "$set": {"a": 1}, "$unset": ["b"]}),
            json!({"$token": "not-the-token", "$distinct_id": "bad-token", "$set": {"a": 1}}),
            user("ok-2", "$set", json!({"a": 2})),
        ]);
        let outcome = client.send(&batch).await.unwrap();
        assert_eq!(outcome.delivered, 2, "{outcome:?}");
        let keys: Vec<&str> = outcome.rejects.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                r#"{"$distinct_id":null}"#,
                r#"{"$distinct_id":"two-ops"}"#,
                r#"{"$distinct_id":"bad-token"}"#
            ]
        );
        let reasons: Vec<&str> = outcome.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons[0].contains("$distinct_id, missing or empty"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("more than one operation"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("$token"), "{reasons:?}");
        assert!(!reasons[2].contains(TOKEN), "no token in reasons");
        assert_eq!(r.profiles().len(), 2);

        // More than 2000 updates: the whole request is refused, with the reason.
        let many: Vec<Value> = (0..2001)
            .map(|i| user(&format!("m{i}"), "$set", json!({"i": i})))
            .collect();
        let outcome = client.send(&records(&many)).await.unwrap();
        assert_eq!((outcome.delivered, outcome.rejects.len()), (0, 2001));
        assert_eq!(outcome.rejects[2000].key, r#"{"$distinct_id":"m2000"}"#);
        assert!(
            outcome.rejects[0].reason.contains("2000"),
            "{:?}",
            outcome.rejects[0]
        );
        assert_eq!(r.profiles().len(), 2);
        let stats = r.endpoint_stats().engage;
        assert_eq!(
            (
                stats.updates_accepted,
                stats.updates_rejected,
                stats.updates_received
            ),
            (2, 2004, 2006)
        );
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engage_answers_follow_mixpanel_shapes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let r = start(receiver_config(dir.path())).await;
        let http = reqwest::Client::new();
        let post = |query: &str, content_type: &str, body: Vec<u8>| {
            http.post(format!("{}/engage?{query}", r.base_url()))
                .header("Content-Type", content_type)
                .body(body)
        };
        let answer = |rb: reqwest::RequestBuilder| async move {
            let resp = rb.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        };
        let good = serde_json::to_vec(&[user("a", "$set", json!({"x": 1}))]).unwrap();
        let bad = serde_json::to_vec(&[json!({"$token": TOKEN, "$distinct_id": "b"})]).unwrap();
        let json_type = "application/json";
        assert_eq!(
            answer(post("", json_type, good.clone())).await,
            (200, "1".into())
        );
        assert_eq!(
            answer(post("", json_type, bad.clone())).await,
            (200, "0".into())
        );
        let (status, text) = answer(post("verbose=1", json_type, good.clone())).await;
        assert_eq!(
            (status, serde_json::from_str::<Value>(&text).unwrap()),
            (200, json!({"status": 1, "error": null}))
        );
        let (status, text) = answer(post("verbose=1", json_type, bad.clone())).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, body["status"].clone()), (200, json!(0)));
        assert!(
            body["error"].as_str().unwrap().contains("no operation"),
            "{body}"
        );

        // Strict: per-update failures, the valid ones applied.
        let mixed = serde_json::to_vec(&[
            user("s1", "$set", json!({"x": 1})),
            json!({"$token": TOKEN, "$distinct_id": "s2", "$add": {"n": "x"}}),
        ])
        .unwrap();
        let (status, text) = answer(post("verbose=1&strict=1", json_type, mixed)).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["status"], 0);
        assert_eq!(body["num_records_imported"], 1);
        assert_eq!(body["failed_records"][0]["index"], 1);
        assert_eq!(body["failed_records"][0]["$distinct_id"], "s2");
        assert_eq!(body["failed_records"][0]["field"], "$add");

        // Form-encoded, base64 `data` and flags in the body, as the official libraries send.
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(&good);
        let form = format!(
            "data={}&verbose=1&ip=0",
            data.replace('+', "%2B").replace('=', "%3D")
        );
        let (status, text) = answer(post(
            "",
            "application/x-www-form-urlencoded",
            form.into_bytes(),
        ))
        .await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, body), (200, json!({"status": 1, "error": null})));

        // Request-wide refusals: gzip, unknown content type, broken JSON.
        let refused = [
            post("verbose=1", json_type, good.clone()).header("Content-Encoding", "gzip"),
            post("verbose=1", "text/plain", good.clone()),
            post("verbose=1", json_type, b"[{".to_vec()),
        ];
        for rb in refused {
            let (status, text) = answer(rb).await;
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!((status, body["status"].clone()), (200, json!(0)), "{body}");
        }
        let profiles = r.profiles();
        assert_eq!(profiles.keys().collect::<Vec<_>>(), ["a", "s1"]);
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_the_same_shape() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let r = start(receiver_config(dir.path())).await;
        let client = profiles_client(&r, ProfileEndpoint::Groups);
        assert_eq!(ProfileEndpoint::Groups.default_limits().max_records, 200);
        let batch = records(&[
            group(
                "company",
                "acme",
                "$set",
                json!({"name": "Acme", "tier": 1, "old": true}),
            ),
            group(
                "company",
                "acme",
                "$set_once",
                json!({"name": "Other", "since": 2020}),
            ),
            group(
                "company",
                "acme",
                "$union",
                json!({"regions": ["eu", "us"]}),
            ),
            group("company", "acme", "$remove", json!({"regions": "us"})),
            group("company", "acme", "$unset", json!(["old"])),
            group("company", "gone", "$set", json!({"name": "Gone"})),
            group("company", "gone", "$delete", json!("")),
            group("team", 12, "$set", json!({"size": 4})),
            group("company", "acme", "$add", json!({"tier": 1})),
            json!({"$token": TOKEN, "$group_key": "company", "$set": {"a": 1}}),
        ]);
        let outcome = client.send(&batch).await.unwrap();
        assert_eq!(outcome.delivered, 8, "{outcome:?}");
        assert_eq!(outcome.rejects.len(), 2);
        let key: Value = serde_json::from_str(&outcome.rejects[0].key).unwrap();
        assert_eq!(key, json!({"$group_key": "company", "$group_id": "acme"}));
        assert!(outcome.rejects[0]
            .reason
            .contains("not a group profile operation"));
        assert!(outcome.rejects[1]
            .reason
            .contains("$group_id, missing or empty"));
        let want = json!({
            "company": {"acme": {"name": "Acme", "tier": 1, "since": 2020, "regions": ["eu"]}},
            "team": {"12": {"size": 4}},
        });
        assert_eq!(get(&r, "/wharf/groups").await, (200, want.clone()));
        assert_eq!(serde_json::to_value(r.groups()).unwrap(), want);
        let stats = r.endpoint_stats().groups;
        assert_eq!(
            (
                stats.requests,
                stats.updates_accepted,
                stats.updates_rejected
            ),
            (1, 8, 2)
        );
        r.shutdown().await;
    })
    .await
}

/// CSV rows `key,name,n` for `rows`.
fn csv_rows(rows: &[(&str, &str, &str)]) -> EncodedRecords {
    let mut records = EncodedRecords::default();
    for (key, name, n) in rows {
        let mut line = Vec::new();
        for (i, value) in [key, name, n].iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            csv_field(&mut line, value);
        }
        records.push(&line);
    }
    records
}

fn table_client(r: &Receiver) -> MixpanelLookupTable {
    let columns = ["id".to_string(), "name".into(), "n".into()];
    MixpanelLookupTable::new(
        &mixpanel(&r.base_url()),
        TABLE,
        &columns,
        Duration::from_secs(10),
    )
    .unwrap()
}

fn table(rows: &[(&str, &str, &str)]) -> LookupTable {
    LookupTable {
        header: vec!["id".into(), "name".into(), "n".into()],
        rows: rows
            .iter()
            .map(|(k, v, n)| vec![k.to_string(), v.to_string(), n.to_string()])
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_tables_are_replaced_whole_or_not_at_all() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = receiver_config(dir.path());
        config.max_lookup_table_bytes = 4096;
        let r = start(config).await;
        let first = [
            ("k1", "plain", "1"),
            ("k2", "with, comma", "2"),
            ("k3", "say \"hi\"\nbye", ""),
        ];
        let client = table_client(&r);
        let outcome = client.send(&csv_rows(&first[..2])).await.unwrap();
        assert_eq!(outcome.delivered, 2);
        client.send(&csv_rows(&first[2..])).await.unwrap();
        assert_eq!(
            r.lookup_table(TABLE).unwrap(),
            None,
            "nothing sent before flush"
        );
        client.flush().await.unwrap();
        assert_eq!(r.lookup_table(TABLE).unwrap(), Some(table(&first)));
        let (status, served) = get(&r, &format!("/wharf/lookup-tables/{TABLE}")).await;
        assert_eq!(
            (status, served),
            (200, serde_json::to_value(table(&first)).unwrap())
        );

        // A second run replaces the whole table.
        let second = [("k9", "only", "9")];
        let client = table_client(&r);
        client.send(&csv_rows(&second)).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(r.lookup_table(TABLE).unwrap(), Some(table(&second)));

        // A duplicate key refuses the table: the run fails, nothing is replaced.
        let client = table_client(&r);
        client
            .send(&csv_rows(&[("a", "x", "1"), ("a", "y", "2")]))
            .await
            .unwrap();
        match client.flush().await {
            Err(e @ DestinationError::Permanent { .. }) => {
                assert!(
                    e.to_string()
                        .contains("row 1: invalid row: row indexes 0 and 1"),
                    "{e}"
                );
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        assert_eq!(r.lookup_table(TABLE).unwrap(), Some(table(&second)));

        // The client refuses a table over its limit before sending anything.
        assert_eq!(LOOKUP_TABLE_MAX_BYTES, 100 * 1024 * 1024);
        let client = table_client(&r).with_max_bytes(64);
        client.send(&csv_rows(&[("a", "x", "1")])).await.unwrap();
        let big = csv_rows(&[("b", &"y".repeat(64), "2")]);
        match client.send(&big).await {
            Err(e @ DestinationError::Permanent { .. }) => {
                let text = e.to_string();
                assert!(text.contains(TABLE) && text.contains("64 bytes"), "{text}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        client.flush().await.unwrap();
        // The receiver's own limit (4 KiB here): 413, permanent.
        let client = table_client(&r);
        client
            .send(&csv_rows(&[("c", &"z".repeat(5000), "3")]))
            .await
            .unwrap();
        let err = client.flush().await.unwrap_err();
        assert!(err.to_string().contains("size limit"), "{err}");
        assert_eq!(r.lookup_table(TABLE).unwrap(), Some(table(&second)));

        // Service-account credentials are required and checked.
        let mut wrong = mixpanel(&r.base_url());
        wrong.service_account = Some(ServiceAccount {
            username: "sa".into(),
            secret: Secret::new("wrong"),
        });
        let columns = ["id".to_string(), "v".into()];
        let client =
            MixpanelLookupTable::new(&wrong, TABLE, &columns, Duration::from_secs(5)).unwrap();
        client.send(&csv_rows(&[("a", "b", "c")])).await.unwrap();
        let err = client.flush().await.unwrap_err();
        assert!(err.to_string().contains("credentials") && !err.to_string().contains("wrong"));
        wrong.service_account = None;
        assert!(MixpanelLookupTable::new(&wrong, TABLE, &columns, Duration::from_secs(5)).is_err());
        let stats = r.endpoint_stats().lookup_tables;
        assert_eq!(
            (stats.requests, stats.tables_replaced, stats.tables_rejected),
            (5, 2, 3)
        );
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_under_faults_ends_in_the_exact_state() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = receiver_config(dir.path());
        config.faults = Some(Faults::new(0.35, 5, Duration::ZERO));
        config.slow_responses = Some(SlowResponses {
            fraction: 0.1,
            delay: Duration::from_millis(700),
            seed: 3,
        });
        let r = start(config).await;
        let host = mixpanel(&r.base_url());
        // Shorter than the slow answers: those requests time out after storing.
        let timeout = Duration::from_millis(400);
        let users = MixpanelProfiles::new(&host, ProfileEndpoint::Users, timeout).unwrap();
        let groups = MixpanelProfiles::new(&host, ProfileEndpoint::Groups, timeout).unwrap();
        let (policy, governor, control) = (fast_policy(), Governor::new(4), RunControl::new(100));
        let mut want_users = Map::new();
        let mut want_groups = Map::new();
        for run in 0..12 {
            let mut user_updates = Vec::new();
            let mut group_updates = Vec::new();
            for i in 0..40 {
                let id = format!("u{i}");
                let update = match (run + i) % 5 {
                    0 if run > 0 => {
                        want_users.remove(&id);
                        user(&id, "$delete", Value::Null)
                    }
                    1 => {
                        if let Some(Value::Object(p)) = want_users.get_mut(&id) {
                            p.remove("run");
                        }
                        user(&id, "$unset", json!(["run"]))
                    }
                    _ => {
                        let entry = want_users.entry(id.clone()).or_insert_with(|| json!({}));
                        entry["run"] = json!(run);
                        user(&id, "$set", json!({"run": run}))
                    }
                };
                user_updates.push(update);
                let gid = format!("g{}", i % 7);
                group_updates.push(group(
                    "company",
                    gid.as_str(),
                    "$set",
                    json!({"run": run, "i": i}),
                ));
                want_groups.insert(gid, json!({"run": run, "i": i}));
            }
            let outcome = deliver(&users, records(&user_updates), &policy, &governor, &control)
                .await
                .unwrap();
            assert_eq!((outcome.delivered, outcome.rejects.len()), (40, 0));
            let outcome = deliver(
                &groups,
                records(&group_updates),
                &policy,
                &governor,
                &control,
            )
            .await
            .unwrap();
            assert_eq!((outcome.delivered, outcome.rejects.len()), (40, 0));
        }
        let rows: Vec<(String, String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}"), i.to_string()))
            .collect();
        let rows: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        let table_client = MixpanelLookupTable::new(
            &host,
            TABLE,
            &["id".to_string(), "name".into(), "n".into()],
            timeout,
        )
        .unwrap()
        .with_flush_retry(FlushRetry {
            retries: 30,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        });
        deliver(&table_client, csv_rows(&rows), &policy, &governor, &control)
            .await
            .unwrap();
        table_client.flush().await.unwrap();

        let held: Map<String, Value> = r
            .profiles()
            .into_iter()
            .map(|(id, p)| (id, Value::Object(p)))
            .collect();
        assert_eq!(held, want_users);
        let held_groups = serde_json::to_value(r.groups()).unwrap();
        assert_eq!(held_groups, json!({"company": want_groups}));
        assert_eq!(r.lookup_table(TABLE).unwrap(), Some(table(&rows)));
        let retries = control
            .counters
            .retries
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(retries > 0, "faults were injected");
        let stats = r.endpoint_stats();
        assert!(
            stats.engage.requests > 12 && stats.groups.requests > 12,
            "{stats:?}"
        );
        assert!(stats.engage.updates_accepted >= 480, "{stats:?}");
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_directory_keeps_profiles_and_tables() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let r = start(receiver_config(dir.path())).await;
        let users = profiles_client(&r, ProfileEndpoint::Users);
        let groups = profiles_client(&r, ProfileEndpoint::Groups);
        users
            .send(&records(&[
                user("a", "$set", json!({"x": 1, "y": [1, 2]})),
                user("b", "$set", json!({"x": 2})),
                user("a", "$append", json!({"y": 3})),
                user("b", "$delete", Value::Null),
            ]))
            .await
            .unwrap();
        groups
            .send(&records(&[group(
                "company",
                "acme",
                "$set",
                json!({"n": 1}),
            )]))
            .await
            .unwrap();
        let client = table_client(&r);
        client.send(&csv_rows(&[("k", "v", "1")])).await.unwrap();
        client.flush().await.unwrap();
        let (profiles, group_profiles, stats) = (r.profiles(), r.groups(), r.endpoint_stats());
        assert_eq!(
            serde_json::to_value(&profiles).unwrap(),
            json!({"a": {"x": 1, "y": [1, 2, 3]}})
        );
        r.shutdown().await;

        // A crash in the middle of a log write leaves a partial line: it is dropped.
        let log = dir.path().join("engage.ndjson");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(r#"{"applied_at_ms":1,"update":{"$tok"#);
        std::fs::write(&log, text).unwrap();

        let r = start(receiver_config(dir.path())).await;
        assert_eq!(r.profiles(), profiles);
        assert_eq!(r.groups(), group_profiles);
        assert_eq!(r.endpoint_stats(), stats);
        assert_eq!(
            r.lookup_table(TABLE).unwrap(),
            Some(table(&[("k", "v", "1")]))
        );
        let users = profiles_client(&r, ProfileEndpoint::Users);
        users
            .send(&records(&[user("a", "$unset", json!(["x"]))]))
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(r.profiles()).unwrap(),
            json!({"a": {"y": [1, 2, 3]}})
        );
        assert_eq!(r.endpoint_stats().engage.updates_accepted, 5);
        r.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out_after_the_update_was_applied() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = receiver_config(dir.path());
        config.slow_responses = Some(SlowResponses {
            fraction: 1.0,
            delay: Duration::from_millis(800),
            seed: 1,
        });
        let r = start(config).await;
        let host = mixpanel(&r.base_url());
        let client =
            MixpanelProfiles::new(&host, ProfileEndpoint::Users, Duration::from_millis(300))
                .unwrap();
        let batch = records(&[user("slow", "$set", json!({"x": 1}))]);
        match client.send(&batch).await {
            Err(e @ DestinationError::Overloaded { .. }) => {
                assert!(e.to_string().contains("timed out"), "{e}")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(
            serde_json::to_value(r.profiles()).unwrap(),
            json!({"slow": {"x": 1}})
        );
        // A patient client gets the answer.
        let patient =
            MixpanelProfiles::new(&host, ProfileEndpoint::Users, Duration::from_secs(5)).unwrap();
        assert_eq!(patient.send(&batch).await.unwrap().delivered, 1);
        r.shutdown().await;
    })
    .await
}
