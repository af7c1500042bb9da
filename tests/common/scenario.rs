//! The sync scenario every warehouse connector passes against its emulator: append (two runs,
//! the second reading only the late rows), full (everything, then only the changed row),
//! mirror (an update and a delete reach the receiver's profiles), a missing table, and
//! `wharf check` while the warehouse is up and once it is gone, with the secret nowhere.

use serde_json::Value;
use wharf::receiver::ReceiverAuth;

use super::{text, Fixture};

/// What a connector's test supplies.
pub struct Scenario<'a> {
    /// The warehouse's name in `warehouse_toml`.
    pub warehouse: &'a str,
    /// `[warehouses.<warehouse>]`.
    pub warehouse_toml: String,
    /// A secret in it that must never be printed.
    pub secret: &'a str,
    /// Runs SQL on the warehouse.
    pub sql: &'a dyn Fn(&[&str]),
    /// The events table (`id`, `name`, `ts`, `uid`) holding `rows` rows, and the users table
    /// (`uid`, `name`, `plan`: u1, u2, u3), as the config names them and as SQL names them.
    pub events: &'a str,
    pub users: &'a str,
    pub users_sql: &'a str,
    pub rows: u64,
    /// Inserts `late` events past the others.
    pub late_sql: &'a str,
    pub late: u64,
    /// Column names as the warehouse reports them: (id, name, ts, uid, plan).
    pub columns: [&'a str; 5],
}

/// Runs the scenario; `stop` takes the warehouse away at the end.
pub fn sync_scenario(fx: &Fixture, s: Scenario, stop: impl FnOnce()) {
    let recv = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let [id, name, ts, uid, plan] = s.columns;
    let sync = |sync: &str, table: &str, kind: &str, mode: &str, mapping: &str| {
        format!(
            "[[syncs]]\nname = \"{sync}\"\nwarehouse = \"{}\"\ntable = \"{table}\"\ntable_type = \"{kind}\"\nmode = \"{mode}\"\ndestinations = [\"mp\"]\n[syncs.mapping]\n{mapping}\n",
            s.warehouse
        )
    };
    let cdc = sync(
        "people_cdc",
        s.users,
        "users",
        "mirror",
        &format!("user_id_column = \"{uid}\""),
    )
    .replace(
        "\n[syncs.mapping]",
        "\nchange_capture = \"logical\"\n[syncs.mapping]",
    );
    fx.write_config(
        "wharf.toml",
        &format!(
            "state_dir = \".state\"\n{}[destinations.mp]\ntype = \"mixpanel\"\napi_host = \"{}\"\nproject_id = \"42\"\nproject_token = \"tok\"\nservice_account = {{ username = \"sa\", secret = \"test-secret\" }}\n{}{}{}{cdc}",
            s.warehouse_toml,
            recv.base_url(),
            sync("events", s.events, "events", "append", &format!("event_name_column = \"{name}\"\ntime_column = \"{ts}\"\nuser_id_column = \"{uid}\"\nkey_columns = [\"{id}\"]")),
            sync("people_full", s.users, "users", "full", &format!("user_id_column = \"{uid}\"")),
            sync("people", s.users, "users", "mirror", &format!("user_id_column = \"{uid}\"")),
        ),
    );
    let summary = |args: &[&str]| -> Value {
        let out = fx.wharf(args, &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    // Append.
    let first = summary(&["sync", "events", "--workers", "2", "--summary-json"]);
    assert_eq!(first["delivered"], s.rows, "{first}");
    assert_eq!(recv.stats().unique_events, s.rows);
    eprintln!(
        "{} rows from {} into the receiver in {:.2}s",
        s.rows,
        s.warehouse,
        first["seconds"].as_f64().unwrap_or(0.0)
    );
    (s.sql)(&[s.late_sql]);
    let second = summary(&["sync", "events", "--summary-json"]);
    assert_eq!(second["rows_read"], s.late, "{second}");
    assert_eq!(recv.stats().unique_events, s.rows + s.late);
    // Full: everything, then only the changed row.
    assert_eq!(
        summary(&["sync", "people_full", "--summary-json"])["delivered"],
        3
    );
    (s.sql)(&[&format!(
        "UPDATE {} SET name = 'Bobby' WHERE uid = 'u2'",
        s.users_sql
    )]);
    assert_eq!(
        summary(&["sync", "people_full", "--summary-json"])["delivered"],
        1
    );
    assert_eq!(recv.profiles()["u2"][name], "Bobby");
    // Mirror: an update and a delete.
    summary(&["sync", "people", "--summary-json"]);
    (s.sql)(&[
        &format!("UPDATE {} SET plan = 'pro' WHERE uid = 'u1'", s.users_sql),
        &format!("DELETE FROM {} WHERE uid = 'u3'", s.users_sql),
    ]);
    summary(&["sync", "people", "--summary-json"]);
    let profiles = recv.profiles();
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert_eq!(profiles["u1"][plan], "pro", "{profiles:?}");
    // Mirror that must read the warehouse's change function, which no emulator has: a clear
    // refusal that says how to turn it on (the `auto` mirror above fell back to diffs).
    let out = fx.wharf(&["sync", "people_cdc"], &[]);
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("change capture here") && t.contains("turn"),
        "{t}"
    );
    // A missing table: a clear error, the secret nowhere.
    (s.sql)(&[&format!("DROP TABLE {}", s.users_sql)]);
    let out = fx.wharf(&["sync", "people"], &[]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("does not exist"), "{t}");
    assert!(!t.contains(s.secret), "{t}");
    // `wharf check`: up, then gone.
    let out = fx.wharf(&["check"], &[]);
    let up = format!("ok    warehouse {}", s.warehouse);
    assert!(text(&out).contains(&up), "{}", text(&out));
    stop();
    let out = fx.wharf(&["check"], &[]);
    let t = text(&out);
    let down = format!("FAIL  warehouse {}", s.warehouse);
    assert!(t.contains(&down) && t.contains("cannot reach"), "{t}");
    assert!(!t.contains(s.secret), "{t}");
}

/// The change rows every connector's change-output test holds, in the warehouse's own
/// change-output shape (`table`: id, name, then the metadata columns), as the emulators cannot
/// produce the real thing: key 1 updated, key 2 deleted, key 3 inserted, key 4 inserted and
/// deleted within the window. Reads `table` through the connector (so the emulator's encoding
/// of those columns goes through wharf's decoding), compacts it as a run would, and checks
/// each key's op and values; then checks that the connector, probing the real change
/// function on `plain` (a table with the same columns), says it cannot use it, with `hint`
/// (how to turn it on) in its reason.
pub fn check_change_output(
    wh: &dyn wharf::warehouse::Warehouse,
    table: &str,
    format: wharf::warehouse::changes::ChangeFormat,
    key: &str,
    expected: &[(i64, &str, &str)],
    plain: &str,
    hint: &str,
) {
    use wharf::warehouse::SourceRef;
    use wharf_operators::arrow::array::AsArray;
    use wharf_operators::arrow::datatypes::Int64Type;
    let src = SourceRef::Table(table.into());
    let mut batches = Vec::new();
    wh.read_snapshot(&src, &mut |b| {
        batches.push(b);
        true
    })
    .unwrap();
    let compacted =
        wharf::warehouse::changes::compact(&batches, format, &[key.to_string()]).unwrap();
    let b = &compacted.batches[0];
    assert_eq!(b.num_columns(), 3, "{:?}", b.schema());
    let ids = wharf_operators::arrow::compute::cast(
        b.column(0),
        &wharf_operators::arrow::datatypes::DataType::Int64,
    )
    .unwrap();
    let ids = ids.as_primitive::<Int64Type>();
    let names = b.column(1).as_string::<i32>();
    let ops = b.column(2).as_string::<i32>();
    let mut got: Vec<(i64, String, String)> = (0..b.num_rows())
        .map(|i| {
            (
                ids.value(i),
                names.value(i).to_string(),
                ops.value(i).to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(i64, String, String)> = expected
        .iter()
        .map(|(i, n, o)| (*i, n.to_string(), o.to_string()))
        .collect();
    assert_eq!(got, want);
    let why = wh
        .change_source("probe", &SourceRef::Table(plain.into()), &[key.to_string()])
        .expect("a warehouse with a change function")
        .open(None)
        .unwrap()
        .expect_err("an emulator without change functions");
    assert!(why.contains(hint), "{why}");
}

/// The expected compaction of the change rows of the Databricks and BigQuery tests: key 4,
/// inserted then deleted within the window, is a delete of a key new in it.
pub const FOUR_KEYS: &[(i64, &str, &str)] = &[
    (1, "new", "update"),
    (2, "gone", "delete"),
    (3, "added", "insert"),
    (4, "brief", "delete_new"),
];
