//! DuckDB → Mixpanel-compatible receiver for every non-event table type, checked by reading the
//! receiver's resulting state: user profiles (full: `$set` of changed rows only; mirror:
//! `$unset` of columns that became NULL, `$delete` of deleted rows; profile history: the latest
//! row per user), group profiles, a lookup-table replace, and events in mirror mode (updates
//! re-imported under the same `$insert_id`, deletes in the change log).

mod common;

use common::{read_ndjson, text, Fixture};
use serde_json::{json, Value};
use wharf::receiver::ReceiverAuth;

fn config(host: &str, sync: &str) -> String {
    format!(
        "state_dir = \".wharf\"\n{}project_token = \"tok\"\n{sync}\n",
        common::duckdb_and_mixpanel(host)
    )
}

fn run(f: &Fixture, name: &str) -> String {
    let out = f.wharf(&["sync", name, "-c", "wharf.toml"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn user_profiles_full_then_mirror() {
    let f = Fixture::new();
    let rx = f.receiver("rx", ReceiverAuth::AnyCredentials);
    f.sql(
        "CREATE TABLE users (user_id VARCHAR, name VARCHAR, plan VARCHAR, seats INTEGER, props JSON);
         INSERT INTO users VALUES ('u1', 'Ann', 'pro', 3, '{\"tier\":\"gold\"}'),
                                  ('u2', 'Bob', 'free', NULL, NULL),
                                  ('u3', 'Cy', 'pro', 1, NULL);",
    );
    let sync = |mode: &str| {
        format!(
            r#"[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "{mode}"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "user_id"
properties_column = "props""#
        )
    };
    f.write_config("wharf.toml", &config(&rx.base_url(), &sync("full")));
    run(&f, "users");
    let profiles = rx.profiles();
    assert_eq!(profiles.len(), 3);
    assert_eq!(
        serde_json::to_value(&profiles["u1"]).unwrap(),
        json!({"name": "Ann", "plan": "pro", "seats": 3, "tier": "gold"})
    );
    assert_eq!(
        serde_json::to_value(&profiles["u2"]).unwrap(),
        json!({"name": "Bob", "plan": "free"})
    );
    let requests_before = rx.endpoint_stats();

    // Full: only the changed row is sent again.
    f.sql("UPDATE users SET plan = 'team' WHERE user_id = 'u2';");
    let out = run(&f, "users");
    assert!(out.contains("0 inserted, 1 updated"), "{out}");
    assert_eq!(rx.profiles()["u2"]["plan"], "team");
    let after = rx.endpoint_stats();
    assert_ne!(
        format!("{requests_before:?}"),
        format!("{after:?}"),
        "the update was sent"
    );

    // Mirror: a column that became NULL is unset, a deleted row is deleted.
    f.write_config("wharf.toml", &config(&rx.base_url(), &sync("mirror")));
    f.sql("UPDATE users SET plan = NULL WHERE user_id = 'u1'; DELETE FROM users WHERE user_id = 'u3';");
    let out = run(&f, "users");
    assert!(out.contains("1 updated, 1 deleted"), "{out}");
    let profiles = rx.profiles();
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert!(!profiles.contains_key("u3"));
    assert_eq!(
        serde_json::to_value(&profiles["u1"]).unwrap(),
        json!({"name": "Ann", "seats": 3, "tier": "gold"})
    );
}

#[test]
fn profile_history_sends_the_latest_row_per_user() {
    let f = Fixture::new();
    let rx = f.receiver("rx", ReceiverAuth::AnyCredentials);
    f.sql(
        "CREATE TABLE hist (user_id VARCHAR, valid_from TIMESTAMP, plan VARCHAR);
         INSERT INTO hist VALUES ('u1', TIMESTAMP '2024-01-01', 'free'),
                                 ('u1', TIMESTAMP '2024-03-01', 'pro'),
                                 ('u1', TIMESTAMP '2024-02-01', 'team'),
                                 ('u2', TIMESTAMP '2024-01-05', 'free');",
    );
    let sync = r#"[[syncs]]
name = "hist"
warehouse = "wh"
table = "hist"
table_type = "users"
mode = "full"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "user_id"
history_start_column = "valid_from""#;
    f.write_config("wharf.toml", &config(&rx.base_url(), sync));
    let out = run(&f, "hist");
    assert!(out.contains("2 inserted"), "{out}");
    assert_eq!(rx.profiles()["u1"]["plan"], "pro");
    f.sql("INSERT INTO hist VALUES ('u1', TIMESTAMP '2024-04-01', 'enterprise');");
    let out = run(&f, "hist");
    assert!(out.contains("0 inserted, 1 updated"), "{out}");
    assert_eq!(rx.profiles()["u1"]["plan"], "enterprise");
    assert_eq!(rx.profiles()["u2"]["plan"], "free");
}

#[test]
fn group_profiles_and_lookup_tables() {
    let f = Fixture::new();
    let rx = f.receiver("rx", ReceiverAuth::AnyCredentials);
    f.sql(
        "CREATE TABLE companies (company_id VARCHAR, name VARCHAR, employees INTEGER);
         INSERT INTO companies VALUES ('c1', 'Acme, Inc.', 10), ('c2', 'Globex \"G\"', 20);",
    );
    let sync = r#"[[syncs]]
name = "groups"
warehouse = "wh"
table = "companies"
table_type = "groups"
mode = "mirror"
destinations = ["mp"]
[syncs.mapping]
group_key = "company_id"
group_id_column = "company_id"

[[syncs]]
name = "lookup"
warehouse = "wh"
table = "companies"
table_type = "lookup"
mode = "full"
primary_key = ["company_id"]
destinations = ["mp"]
[syncs.mapping]
lookup_table_id = "6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a90""#;
    f.write_config("wharf.toml", &config(&rx.base_url(), sync));
    run(&f, "groups");
    run(&f, "lookup");
    let groups = rx.groups();
    assert_eq!(
        serde_json::to_value(&groups["company_id"]["c1"]).unwrap(),
        json!({"name": "Acme, Inc.", "employees": 10})
    );
    let table = rx
        .lookup_table("6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a90")
        .unwrap()
        .expect("lookup table");
    assert_eq!(table.header, vec!["company_id", "name", "employees"]);
    assert_eq!(table.rows.len(), 2);
    assert!(table.rows.contains(&vec![
        "c2".to_string(),
        "Globex \"G\"".to_string(),
        "20".to_string()
    ]));

    f.sql("DELETE FROM companies WHERE company_id = 'c1'; INSERT INTO companies VALUES ('c3', 'Initech', 5);");
    run(&f, "groups");
    run(&f, "lookup");
    let groups = rx.groups();
    assert!(!groups["company_id"].contains_key("c1"));
    assert_eq!(groups["company_id"]["c3"]["name"], "Initech");
    // The lookup table was replaced whole: c1 is gone.
    let table = rx
        .lookup_table("6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a90")
        .unwrap()
        .expect("lookup table");
    let keys: Vec<&str> = table.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"c2") && keys.contains(&"c3"));

    // Nothing changed: the lookup table is not sent again.
    let before = format!("{:?}", rx.endpoint_stats());
    run(&f, "lookup");
    assert_eq!(before, format!("{:?}", rx.endpoint_stats()));
}

#[test]
fn mirror_events_reimport_updates_and_log_deletes() {
    let f = Fixture::new();
    let rx = f.receiver("rx", ReceiverAuth::AnyCredentials);
    f.sql(
        "CREATE TABLE ev (id INTEGER, uid VARCHAR, ts TIMESTAMP, amount INTEGER);
         INSERT INTO ev VALUES (1, 'a', TIMESTAMP '2024-01-01', 5), (2, 'b', TIMESTAMP '2024-01-02', 6),
                               (3, 'c', TIMESTAMP '2024-01-03', 7);",
    );
    let sync = r#"[[syncs]]
name = "ev"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "mirror"
primary_key = ["id"]
destinations = ["mp"]
[syncs.mapping]
event_name = "Order"
time_column = "ts"
user_id_column = "uid""#;
    f.write_config("wharf.toml", &config(&rx.base_url(), sync));
    run(&f, "ev");
    assert_eq!(rx.stats().unique_events, 3);
    f.sql(
        "UPDATE ev SET amount = 50 WHERE id = 1; DELETE FROM ev WHERE id = 2;
         UPDATE ev SET uid = 'z' WHERE id = 3;",
    );
    let out = run(&f, "ev");
    assert!(out.contains("2 updated, 1 deleted"), "{out}");
    // The amount update replaced event 1 (same key: Mixpanel keeps the latest copy); the
    // re-keyed event 3 is a new event; nothing can delete event 2.
    assert_eq!(rx.stats().unique_events, 4);
    let latest: Vec<Value> = rx
        .events()
        .unwrap()
        .into_iter()
        .filter(|e| e["properties"]["id"] == 1)
        .collect();
    assert_eq!(latest.last().unwrap()["properties"]["amount"], 50);
    let log = read_ndjson(&f.path(".wharf/changes/ev.ndjson"));
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log
        .iter()
        .any(|l| l["key"] == 2 && l["reason"].as_str().unwrap().contains("cannot delete")));
    assert!(log
        .iter()
        .any(|l| l["key"] == 3 && l["reason"].as_str().unwrap().contains("changed")));
    assert!(
        out.contains("2 changes the destination cannot apply"),
        "{out}"
    );
}

/// Time-based (append) syncs of user profiles, group profiles and lookup tables: each run
/// reads the rows past the insert-time watermark; per key the latest of them is sent (`$set`
/// for profiles); a lookup table is replaced whole, with the new rows merged, and only when
/// something new arrived.
#[test]
fn append_syncs_of_profiles_groups_and_lookup_tables() {
    let f = Fixture::new();
    let rx = f.receiver("rx", ReceiverAuth::AnyCredentials);
    f.sql(
        "CREATE TABLE user_log (user_id VARCHAR, plan VARCHAR, seats INTEGER, added_at TIMESTAMP);
         INSERT INTO user_log VALUES ('u1', 'free', 1, TIMESTAMP '2024-01-01 10:00'),
           ('u1', 'pro', 2, TIMESTAMP '2024-01-01 11:00'), ('u2', 'free', 1, TIMESTAMP '2024-01-01 10:30');
         CREATE TABLE company_log (company_id VARCHAR, name VARCHAR, added_at TIMESTAMP);
         INSERT INTO company_log VALUES ('c1', 'Acme', TIMESTAMP '2024-01-01 10:00'),
           ('c2', 'Globex', TIMESTAMP '2024-01-01 10:00');
         CREATE TABLE sku_log (sku VARCHAR, title VARCHAR, added_at TIMESTAMP);
         INSERT INTO sku_log VALUES ('s1', 'Shoe', TIMESTAMP '2024-01-01 10:00'),
           ('s2', 'Sock', TIMESTAMP '2024-01-01 10:00');",
    );
    let sync = r#"[[syncs]]
name = "users"
warehouse = "wh"
table = "user_log"
table_type = "users"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "user_id"
insert_time_column = "added_at"
exclude_columns = ["added_at"]

[[syncs]]
name = "groups"
warehouse = "wh"
table = "company_log"
table_type = "groups"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
group_key = "company_id"
group_id_column = "company_id"
insert_time_column = "added_at"
exclude_columns = ["added_at"]

[[syncs]]
name = "skus"
warehouse = "wh"
table = "sku_log"
table_type = "lookup"
mode = "append"
primary_key = ["sku"]
destinations = ["mp"]
[syncs.mapping]
lookup_table_id = "6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a91"
insert_time_column = "added_at"
exclude_columns = ["added_at"]"#;
    f.write_config("wharf.toml", &config(&rx.base_url(), sync));
    for s in ["users", "groups", "skus"] {
        run(&f, s);
    }
    assert_eq!(
        rx.profiles()["u1"]["plan"],
        "pro",
        "the latest row per user"
    );
    assert_eq!(rx.profiles()["u1"]["seats"], 2);
    assert_eq!(rx.profiles()["u2"]["plan"], "free");
    assert_eq!(rx.groups()["company_id"]["c2"]["name"], "Globex");
    let lookup = || {
        let t = rx
            .lookup_table("6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a91")
            .unwrap()
            .expect("lookup table");
        let mut rows = t.rows.clone();
        rows.sort();
        (t.header, rows)
    };
    assert_eq!(lookup().0, vec!["sku", "title"]);
    assert_eq!(lookup().1.len(), 2);
    let engage_before = rx.endpoint_stats().engage;

    // New rows: an update of u2, a new user, a renamed company, a new and a changed sku.
    f.sql(
        "INSERT INTO user_log VALUES ('u2', 'pro', 5, TIMESTAMP '2024-01-02 09:00'),
           ('u3', 'free', 1, TIMESTAMP '2024-01-02 09:00');
         INSERT INTO company_log VALUES ('c1', 'Acme Corp', TIMESTAMP '2024-01-02 09:00');
         INSERT INTO sku_log VALUES ('s3', 'Hat', TIMESTAMP '2024-01-02 09:00'),
           ('s1', 'Running shoe', TIMESTAMP '2024-01-02 09:30');",
    );
    for s in ["users", "groups", "skus"] {
        run(&f, s);
    }
    let engage = rx.endpoint_stats().engage;
    assert_eq!(
        (
            engage.requests - engage_before.requests,
            engage.updates_accepted - engage_before.updates_accepted
        ),
        (1, 2),
        "only the two users with new rows were sent"
    );
    assert_eq!(rx.profiles()["u2"]["plan"], "pro");
    assert_eq!(rx.profiles()["u3"]["plan"], "free");
    assert_eq!(rx.profiles()["u1"]["plan"], "pro", "untouched");
    assert_eq!(rx.groups()["company_id"]["c1"]["name"], "Acme Corp");
    assert_eq!(
        lookup().1,
        vec![
            vec!["s1".to_string(), "Running shoe".to_string()],
            vec!["s2".to_string(), "Sock".to_string()],
            vec!["s3".to_string(), "Hat".to_string()],
        ],
        "the whole table, the new rows merged in"
    );

    // Nothing new: nothing is sent, the lookup table is not replaced again.
    let before = format!("{:?}", rx.endpoint_stats());
    for s in ["users", "groups", "skus"] {
        run(&f, s);
    }
    assert_eq!(before, format!("{:?}", rx.endpoint_stats()));
}
