//! Integration tests of the Mixpanel-compatible receiver, over real HTTP.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use wharf::destination::mixpanel::import::percent_encode;
use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig, ReceiverStats};

const USER: &str = "svc-user.1234.mp-service-account";
const SECRET: &str = "s3cr3t-value";
const PROJECT: &str = "3141592";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn service_account() -> ReceiverAuth {
    ReceiverAuth::ServiceAccount {
        username: USER.into(),
        secret: SECRET.into(),
        project_id: PROJECT.into(),
    }
}

async fn start(dir: &Path, auth: ReceiverAuth) -> Receiver {
    Receiver::start(
        ReceiverConfig::new(dir, auth),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("receiver starts")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn event(i: usize) -> Value {
    json!({
        "event": "Signed Up",
        "properties": {
            "time": now_secs() - 3600,
            "distinct_id": format!("user-{i}"),
            "$insert_id": format!("ins-{i}"),
            "plan": "pro",
        }
    })
}

fn with_props(name: &str, props: Value) -> Value {
    json!({"event": name, "properties": props})
}

fn json_body(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(events).unwrap()
}

/// The receiver's event log (NDJSON in gzip members) as text.
fn event_log(dir: &Path) -> String {
    let packed = std::fs::read(dir.join("events.ndjson.gz")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&packed[..]),
        &mut text,
    )
    .unwrap();
    text
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// POST to `/import?{query}` with service-account credentials.
fn import(client: &reqwest::Client, r: &Receiver, query: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/import?{query}", r.base_url()))
        .basic_auth(USER, Some(SECRET))
}

fn json_import(
    client: &reqwest::Client,
    r: &Receiver,
    query: &str,
    events: &[Value],
) -> reqwest::RequestBuilder {
    import(client, r, query)
        .header("Content-Type", "application/json")
        .body(json_body(events))
}

async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = rb.send().await.expect("request succeeds");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("response body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

const STRICT: &str = "strict=1&project_id=3141592";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_import_is_stored_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let events: Vec<Value> = (0..3).map(event).collect();
    let (status, body) = send(json_import(&client, &r, STRICT, &events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"code": 200, "num_records_imported": 3, "status": "OK"})
    );
    assert_eq!(r.events().unwrap(), events);
    assert_eq!(
        r.stats(),
        ReceiverStats {
            requests: 1,
            events_received: 3,
            events_accepted: 3,
            events_rejected: 0,
            unique_events: 3
        }
    );
    assert!(dir.path().join("events.ndjson.gz").exists());

    // A single event object is accepted too.
    let single = import(&client, &r, STRICT)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(serde_json::to_vec(&event(9)).unwrap());
    let (status, body) = send(single).await;
    assert_eq!(
        (status, body["num_records_imported"].clone()),
        (200, json!(1))
    );
    assert_eq!(r.events().unwrap().len(), 4);

    // Events are stored as sent, one line each: a pretty-printed body too.
    let two = vec![event(10), event(11)];
    let pretty = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec_pretty(&two).unwrap());
    let (status, body) = send(pretty).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(r.events().unwrap()[4..], two);
    assert_eq!(event_log(dir.path()).lines().count(), 6);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_and_gzip_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let all: Vec<Value> = (0..12).map(event).collect();
    let events = &all[..5];
    let mut ndjson = String::new();
    for e in events {
        ndjson.push_str(&e.to_string());
        ndjson.push_str("\n\n");
    }
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/x-ndjson")
        .header("Content-Encoding", "gzip")
        .body(gzip(ndjson.as_bytes()));
    let (status, body) = send(rb).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["num_records_imported"], 5);

    // Gzipped JSON array.
    let more = &all[5..7];
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gzip(&json_body(more)));
    assert_eq!(send(rb).await.0, 200);

    // Plain NDJSON without compression.
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/x-ndjson")
        .body(format!("{}\n", all[7]));
    assert_eq!(send(rb).await.0, 200);

    // A last line without its newline (stored as the body came, plus the newline) and CRLF
    // line ends (each line stored without its `\r`).
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/x-ndjson")
        .body(format!("{}\n{}", all[8], all[9]));
    assert_eq!(send(rb).await.0, 200);
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/x-ndjson")
        .body(format!("{}\r\n{}\r\n", all[10], all[11]));
    assert_eq!(send(rb).await.0, 200);

    // A body claiming gzip that is not gzip.
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(json_body(more));
    let (status, body) = send(rb).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 400);

    let stored = r.events().unwrap();
    assert_eq!(stored.len(), 12);
    assert_eq!(stored, all);
    assert_eq!(r.stats().events_accepted, 12);
    // The log holds each event's text as sent, one line each.
    let want: String = all.iter().map(|e| format!("{e}\n")).collect();
    assert_eq!(event_log(dir.path()), want);
    // The first body (gzip, but with blank lines) was stored as its accepted lines, the
    // third (plain NDJSON) gzipped here: each a member of its own.
    let packed = std::fs::read(dir.path().join("events.ndjson.gz")).unwrap();
    assert!(packed.starts_with(&[0x1f, 0x8b]));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_encoded_data_with_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        dir.path(),
        ReceiverAuth::ProjectToken {
            token: TOKEN.into(),
        },
    )
    .await;
    let client = reqwest::Client::new();
    let form = |query: &str, body: String| {
        client
            .post(format!("{}/import?{query}", r.base_url()))
            .basic_auth(TOKEN, Some(""))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let events: Vec<Value> = (0..2).map(event).collect();
    let data = percent_encode(&serde_json::to_string(&events).unwrap());
    let (status, body) = send(form("strict=1", format!("data={data}&verbose=1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": 1, "error": null}));

    // Without verbose the regular Mixpanel shape is used; '+' stands for a space.
    let spaced = r#"[{"event":"Page+View","properties":{"time":TIME,"distinct_id":"u+1","$insert_id":"f1"}}]"#
        .replace("TIME", &(now_secs() - 10).to_string());
    let (status, body) = send(form("strict=1", format!("data={spaced}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["num_records_imported"], 1);
    let stored = r.events().unwrap();
    assert_eq!(stored[2]["event"], "Page View");
    assert_eq!(stored[2]["properties"]["distinct_id"], "u 1");

    // Strict failure in verbose mode.
    let bad = vec![with_props(
        "E",
        json!({"time": 1, "distinct_id": "u", "$insert_id": "x"}),
    )];
    let data = percent_encode(&serde_json::to_string(&bad).unwrap());
    let (status, body) = send(form("strict=1", format!("verbose=1&data={data}"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], 0);
    assert_eq!(
        body["error"],
        "some data points in the request failed validation"
    );

    // Missing data field and broken percent-encoding are 400s.
    let (status, body) = send(form("strict=1", "verbose=1".into())).await;
    assert_eq!((status, body["status"].clone()), (400, json!(0)));
    assert!(body["error"].as_str().unwrap().contains("data"));
    assert_eq!(send(form("strict=1", "data=%zz".into())).await.0, 400);
    assert_eq!(r.stats().events_accepted, 3);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_credentials_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let body = json_body(&[event(1)]);
    let url = |query: &str| format!("{}/import?{query}", r.base_url());
    let post = |query: &str| {
        client
            .post(url(query))
            .header("Content-Type", "application/json")
            .body(body.clone())
    };
    let unauthorized =
        json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"});
    let attempts = vec![
        post(STRICT),
        post(STRICT).basic_auth(USER, Some("wrong-secret")),
        post(STRICT).basic_auth("someone-else", Some(SECRET)),
        post("strict=1&project_id=999").basic_auth(USER, Some(SECRET)),
        post("strict=1").basic_auth(USER, Some(SECRET)),
        post(STRICT).bearer_auth(SECRET),
        post(STRICT).header("Authorization", "Basic !!!not-base64"),
    ];
    for rb in attempts {
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let text = resp.text().await.unwrap();
        assert!(!text.contains(SECRET) && !text.contains(USER));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), unauthorized);
    }
    let (status, _) = send(post(STRICT).basic_auth(USER, Some(SECRET))).await;
    assert_eq!(status, 200);
    let stats = r.stats();
    assert_eq!((stats.requests, stats.events_accepted), (8, 1));
    r.shutdown().await;

    // Project token: token as username with an empty password; project_id optional.
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        dir.path(),
        ReceiverAuth::ProjectToken {
            token: TOKEN.into(),
        },
    )
    .await;
    let post = |user: &str, pass: &str| {
        client
            .post(format!("{}/import?strict=1", r.base_url()))
            .basic_auth(user, Some(pass))
            .header("Content-Type", "application/json")
            .body(body.clone())
    };
    assert_eq!(send(post(TOKEN, "")).await.0, 200);
    assert_eq!(send(post(TOKEN, "not-empty")).await.0, 401);
    assert_eq!(
        send(post("ffffffffffffffffffffffffffffffff", "")).await.0,
        401
    );
    r.shutdown().await;

    // Dry-run mode: any non-empty username.
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), ReceiverAuth::AnyCredentials).await;
    let post = |user: &str| {
        client
            .post(format!("{}/import?strict=1", r.base_url()))
            .basic_auth(user, Some("x"))
            .header("Content-Type", "application/json")
            .body(body.clone())
    };
    assert_eq!(send(post("anyone")).await.0, 200);
    assert_eq!(send(post("")).await.0, 401);
    r.shutdown().await;
}

/// Builds the strict-mode batch: (events, expected failures as (index, $insert_id, field)).
fn mixed_batch() -> (Vec<Value>, Vec<(usize, &'static str, &'static str)>) {
    let now = now_secs();
    let ok = |id: &str| json!({"time": now - 60, "distinct_id": "u-1", "$insert_id": id});
    let mut many = Map::new();
    many.insert("time".into(), json!(now - 60));
    many.insert("distinct_id".into(), json!("u-1"));
    many.insert("$insert_id".into(), json!("many"));
    for i in 0..253 {
        many.insert(format!("p{i}"), json!(i));
    }
    fn set(mut props: Value, key: &str, value: Value) -> Value {
        props[key] = value;
        props
    }
    let long_id = "a".repeat(37);
    let events = vec![
        with_props("Valid", ok("v0")),
        with_props("E", set(ok("t1971"), "time", json!(31_535_999))),
        with_props("E", set(ok("tfuture"), "time", json!(now + 7200))),
        with_props("E", set(ok("dnull"), "distinct_id", json!("null"))),
        with_props("E", set(ok("dzero"), "distinct_id", json!(0))),
        with_props("Valid", set(ok("v5"), "time", json!((now - 5) * 1000))),
        with_props("E", set(ok("dundef"), "distinct_id", json!(" Undefined "))),
        with_props("E", json!({"time": now, "distinct_id": "u-1"})),
        with_props("E", ok(&long_id)),
        with_props("E", ok("bad_id!")),
        with_props("E", Value::Object(many)),
        with_props("Valid", set(ok("v11"), "distinct_id", json!(""))),
        with_props("", ok("noname")),
        json!({"event": "E", "properties": [1, 2]}),
        with_props("E", set(ok("tstring"), "time", json!("1700000000"))),
        with_props("E", set(ok("dzerostr"), "distinct_id", json!("0"))),
        with_props("Valid", set(ok("v16"), "time", json!(31_536_000))),
        with_props("Valid", ok("123e4567-e89b-12d3-a456-426614174000")),
    ];
    let long: &'static str = Box::leak(long_id.into_boxed_str());
    let failures = vec![
        (1, "t1971", "properties.time"),
        (2, "tfuture", "properties.time"),
        (3, "dnull", "properties.distinct_id"),
        (4, "dzero", "properties.distinct_id"),
        (6, "dundef", "properties.distinct_id"),
        (7, "", "properties.$insert_id"),
        (8, long, "properties.$insert_id"),
        (9, "bad_id!", "properties.$insert_id"),
        (10, "many", "properties"),
        (12, "noname", "event"),
        (13, "", "properties"),
        (14, "tstring", "properties.time"),
        (15, "dzerostr", "properties.distinct_id"),
    ];
    (events, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mixed_batch_reports_failed_records_and_stores_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let (events, expected) = mixed_batch();
    let (status, body) = send(json_import(&client, &r, STRICT, &events)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 400);
    assert_eq!(body["status"], "Bad Request");
    assert_eq!(
        body["error"],
        "some data points in the request failed validation"
    );
    assert_eq!(body["num_records_imported"], 5);
    let failed = body["failed_records"].as_array().unwrap();
    let got: Vec<(usize, String, String)> = failed
        .iter()
        .map(|f| {
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
            (
                f["index"].as_u64().unwrap() as usize,
                f["$insert_id"].as_str().unwrap().to_string(),
                f["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(usize, String, String)> = expected
        .iter()
        .map(|(i, id, field)| (*i, id.to_string(), field.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(failed[0]["message"].as_str().unwrap().contains("1971"));
    assert!(failed[1]["message"].as_str().unwrap().contains("future"));

    let valid: Vec<Value> = [0, 5, 11, 16, 17]
        .iter()
        .map(|&i| events[i].clone())
        .collect();
    assert_eq!(r.events().unwrap(), valid);
    let stats = r.stats();
    assert_eq!(
        stats,
        ReceiverStats {
            requests: 1,
            events_received: 18,
            events_accepted: 5,
            events_rejected: 13,
            unique_events: 5
        }
    );
    assert_eq!(r.empty_distinct_ids(), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_invalid_events_are_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let (events, _) = mixed_batch();
    let (status, body) = send(json_import(&client, &r, "project_id=3141592", &events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"code": 200, "num_records_imported": 5, "status": "OK"})
    );
    assert_eq!(r.events().unwrap().len(), 5);
    let stats = r.stats();
    assert_eq!((stats.events_accepted, stats.events_rejected), (5, 13));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_2000_events_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let events: Vec<Value> = (0..2001).map(event).collect();
    let (status, body) = send(json_import(&client, &r, STRICT, &events)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("2000"), "{body}");
    assert!(r.events().unwrap().is_empty());
    assert_eq!(r.stats().events_rejected, 2001);

    let (status, body) = send(json_import(&client, &r, STRICT, &events[..2000])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["num_records_imported"], 2000);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let too_large =
        json!({"code": 413, "error": "request body too large", "status": "Payload Too Large"});
    let limit = 10 * 1024 * 1024;

    let mut raw = json_body(&[event(1)]);
    raw.resize(limit + 1, b' ');
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .body(raw.clone());
    assert_eq!(send(rb).await, (413, too_large.clone()));

    // Exactly at the limit is fine.
    raw.truncate(limit);
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .body(raw);
    assert_eq!(send(rb).await.0, 200);

    // A small gzip body that inflates past the limit.
    let rb = import(&client, &r, STRICT)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gzip(&vec![b' '; limit + 4096]));
    assert_eq!(send(rb).await, (413, too_large));
    assert_eq!(r.stats().events_accepted, 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"[{\"event\": ".to_vec()),
        ("application/json", b"".to_vec()),
        ("application/json", b"42".to_vec()),
        (
            "application/x-ndjson",
            format!("{}\nnot json\n", event(1)).into_bytes(),
        ),
        ("text/plain", json_body(&[event(1)])),
    ];
    for (content_type, body) in cases {
        let rb = import(&client, &r, STRICT)
            .header("Content-Type", content_type)
            .body(body);
        let (status, body) = send(rb).await;
        assert_eq!(status, 400, "{content_type}: {body}");
        assert_eq!(body["code"], 400);
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    assert!(r.events().unwrap().is_empty());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_count_as_accepted_but_not_unique() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let events: Vec<Value> = (0..5).map(event).collect();
    for _ in 0..2 {
        assert_eq!(send(json_import(&client, &r, STRICT, &events)).await.0, 200);
    }
    let stats = r.stats();
    assert_eq!((stats.events_accepted, stats.unique_events), (10, 5));

    // Same key with the time in milliseconds and extra properties: still a duplicate.
    let mut same = events[0].clone();
    let secs = same["properties"]["time"].as_i64().unwrap();
    same["properties"]["time"] = json!(secs * 1000);
    same["properties"]["extra"] = json!(true);
    // A different $insert_id is a different event.
    let mut other = events[0].clone();
    other["properties"]["$insert_id"] = json!("another-id");
    assert_eq!(
        send(json_import(&client, &r, STRICT, &[same, other]))
            .await
            .0,
        200
    );
    let stats = r.stats();
    assert_eq!((stats.events_accepted, stats.unique_events), (12, 6));
    assert_eq!(r.events().unwrap().len(), 12);
    r.shutdown().await;
}

/// A data directory of an earlier version (plain `events.ndjson`) is read, then the new log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_plain_event_log_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<Value> = (0..2).map(event).collect();
    let text: String = old.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(dir.path().join("events.ndjson"), text).unwrap();
    let r = start(dir.path(), service_account()).await;
    assert_eq!((r.stats().events_accepted, r.stats().unique_events), (2, 2));
    let client = reqwest::Client::new();
    let new = vec![event(2), old[0].clone()];
    assert_eq!(send(json_import(&client, &r, STRICT, &new)).await.0, 200);
    assert_eq!((r.stats().events_accepted, r.stats().unique_events), (4, 3));
    let all: Vec<Value> = old.into_iter().chain(new).collect();
    assert_eq!(r.events().unwrap(), all);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_same_directory_keeps_stats() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let events: Vec<Value> = (0..4).map(event).collect();
    let r = start(dir.path(), service_account()).await;
    assert_eq!(send(json_import(&client, &r, STRICT, &events)).await.0, 200);
    assert_eq!(
        send(json_import(&client, &r, STRICT, &events[..2])).await.0,
        200
    );
    let (events_mixed, _) = mixed_batch();
    assert_eq!(
        send(json_import(&client, &r, STRICT, &events_mixed))
            .await
            .0,
        400
    );
    let before = r.stats();
    let stored = r.events().unwrap();
    assert_eq!(before.events_accepted, 11);
    assert_eq!(before.unique_events, 9);
    r.shutdown().await;
    // A crash mid-write leaves a truncated last gzip member; it is dropped on restart (and
    // cut off the file), whatever part of it made it to disk.
    let path = dir.path().join("events.ndjson.gz");
    let good_len = std::fs::metadata(&path).unwrap().len();
    let member = gzip(format!("{}\n{}\n", event(90), event(91)).as_bytes());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&member[..member.len() / 2]).unwrap();
    drop(file);

    let r = start(dir.path(), service_account()).await;
    assert_eq!(r.stats(), before);
    assert_eq!(r.events().unwrap(), stored);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(send(json_import(&client, &r, STRICT, &events)).await.0, 200);
    let after = r.stats();
    assert_eq!(after.requests, before.requests + 1);
    assert_eq!(after.events_accepted, before.events_accepted + 4);
    assert_eq!(after.unique_events, before.unique_events);
    assert_eq!(r.events().unwrap().len(), 15);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_health_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), service_account()).await;
    let client = reqwest::Client::new();
    let (events, _) = mixed_batch();
    send(json_import(&client, &r, STRICT, &events)).await;
    send(json_import(&client, &r, STRICT, &events[..1])).await;

    let (status, body) = send(client.get(format!("{}/wharf/stats", r.base_url()))).await;
    assert_eq!(status, 200);
    let served: ReceiverStats = serde_json::from_value(body).unwrap();
    assert_eq!(served, r.stats());
    assert_eq!(served.requests, 2);
    assert_eq!(served.unique_events, 5);

    let resp = client
        .get(format!("{}/healthz", r.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    let (status, body) = send(client.get(format!("{}/nope", r.base_url()))).await;
    assert_eq!((status, body["code"].clone()), (404, json!(404)));
    let (status, body) = send(client.get(format!("{}/import", r.base_url()))).await;
    assert_eq!((status, body["code"].clone()), (405, json!(405)));
    assert!(r.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        r.addr().port(),
        r.base_url()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    );
    r.shutdown().await;
}
