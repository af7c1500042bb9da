//! The bad-input corpus: configs and table data that are wrong, odd or extreme. Each case ends
//! in a clear error that names the place (the config key, the column, the table), or in rows
//! rejected with their reason — never a panic, and never a row that is neither delivered nor
//! rejected.

mod common;

use common::{events_config, read_ndjson, text, Fixture};
use wharf::config::Config;
use wharf::receiver::ReceiverAuth;

const GOOD: &str = r#"state_dir = ".state"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "http://127.0.0.1:9"
project_id = "42"
project_token = "tok"
service_account = { username = "sa", secret = "test-secret" }
[destinations.k]
type = "kafka"
brokers = "127.0.0.1:9"
[[syncs]]
name = "s"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
"#;

fn with(old: &'static str, new: &'static str) -> impl Fn(&str) -> String {
    move |c: &str| {
        assert!(
            c.contains(old),
            "case edits a line that is not there: {old}"
        );
        c.replacen(old, new, 1)
    }
}

const SYNC_LINE: &str = "mode = \"append\"";

/// A config case: what it is, how it edits the good config, the key its error names, and
/// words its message holds.
type ConfigCase = (
    &'static str,
    Box<dyn Fn(&str) -> String>,
    &'static str,
    Vec<&'static str>,
);

fn config_cases() -> Vec<ConfigCase> {
    fn c(
        what: &'static str,
        edit: impl Fn(&str) -> String + 'static,
        key: &'static str,
        words: &[&'static str],
    ) -> ConfigCase {
        (what, Box::new(edit), key, words.to_vec())
    }
    let append = |extra: &'static str| {
        move |cfg: &str| cfg.replacen(SYNC_LINE, &format!("{SYNC_LINE}\n{extra}"), 1)
    };
    vec![
        c(
            "unknown top-level key",
            |g: &str| format!("colour = \"red\"\n{g}"),
            "colour",
            &["unknown field `colour`"],
        ),
        c(
            "unknown warehouse key",
            with("path = \"wh.duckdb\"", "path = \"wh.duckdb\"\nport = 1"),
            "warehouses.wh.port",
            &["unknown field `port`"],
        ),
        c(
            "unknown Mixpanel key",
            with(
                "project_id = \"42\"",
                "project_id = \"42\"\nendpoint = \"x\"",
            ),
            "destinations.mp.endpoint",
            &["unknown field `endpoint`"],
        ),
        c(
            "unknown Kafka key",
            with(
                "brokers = \"127.0.0.1:9\"",
                "brokers = \"127.0.0.1:9\"\nacks = \"all\"",
            ),
            "destinations.k.acks",
            &["unknown field `acks`"],
        ),
        c(
            "unknown sync key",
            append("tabel = \"x\""),
            "syncs[0].tabel",
            &["unknown field `tabel`"],
        ),
        c(
            "unknown mapping key",
            with(
                "user_id_column = \"uid\"",
                "user_id_column = \"uid\"\nuser_column = \"uid\"",
            ),
            "syncs[0].mapping.user_column",
            &["unknown field `user_column`"],
        ),
        c(
            "mode of the wrong type",
            with(SYNC_LINE, "mode = 3"),
            "syncs[0].mode",
            &["invalid type"],
        ),
        c(
            "unknown mode",
            with(SYNC_LINE, "mode = \"upsert\""),
            "syncs[0].mode",
            &["unknown variant `upsert`"],
        ),
        c(
            "destinations not a list",
            with("destinations = [\"mp\"]", "destinations = \"mp\""),
            "syncs[0].destinations",
            &["invalid type"],
        ),
        c(
            "partitions not a number",
            with(
                "brokers = \"127.0.0.1:9\"",
                "brokers = \"127.0.0.1:9\"\npartitions = \"three\"",
            ),
            "destinations.k.partitions",
            &["invalid type"],
        ),
        c(
            "exactly_once not a boolean",
            with(
                "brokers = \"127.0.0.1:9\"",
                "brokers = \"127.0.0.1:9\"\nexactly_once = \"yes\"",
            ),
            "destinations.k.exactly_once",
            &["invalid type"],
        ),
        c(
            "unset variable in a secret",
            with("\"test-secret\"", "\"${WHARF_BAD_INPUT_UNSET}\""),
            "destinations.mp.service_account.secret",
            &["WHARF_BAD_INPUT_UNSET", "not set"],
        ),
        c(
            "unset variable in a path",
            with(
                "path = \"wh.duckdb\"",
                "path = \"${WHARF_BAD_INPUT_UNSET}/wh.duckdb\"",
            ),
            "warehouses.wh.path",
            &["WHARF_BAD_INPUT_UNSET", "not set"],
        ),
        c(
            "bad request timeout",
            with(
                "project_id = \"42\"",
                "project_id = \"42\"\ntimeout = \"soon\"",
            ),
            "destinations.mp.timeout",
            &["soon"],
        ),
        c(
            "negative give_up_after",
            with(
                "project_id = \"42\"",
                "project_id = \"42\"\ngive_up_after = \"-5s\"",
            ),
            "destinations.mp.give_up_after",
            &["-5s"],
        ),
        c(
            "bad jitter",
            append("jitter = \"1 parsec\""),
            "syncs[0].jitter",
            &["not a duration"],
        ),
        c(
            "bad lookback",
            append("lookback = \"x\""),
            "syncs[0].lookback",
            &["not a duration"],
        ),
        c(
            "lookback on a mirror sync",
            |g: &str| {
                g.replacen(
                    SYNC_LINE,
                    "mode = \"mirror\"\nprimary_key = [\"id\"]\nlookback = \"1h\"",
                    1,
                )
            },
            "syncs[0].lookback",
            &["only append syncs"],
        ),
        c(
            "cron minute out of range",
            append("schedule = \"61 * * * *\""),
            "syncs[0].schedule",
            &["61 is outside 0-59"],
        ),
        c(
            "cron with three fields",
            append("schedule = \"* * *\""),
            "syncs[0].schedule",
            &["write `manual`"],
        ),
        c(
            "unknown schedule word",
            append("schedule = \"sometimes\""),
            "syncs[0].schedule",
            &["hourly"],
        ),
        c(
            "zero interval",
            append("schedule = \"0s\""),
            "syncs[0].schedule",
            &["longer than zero"],
        ),
        c(
            "two syncs with one name",
            |g: &str| format!("{g}\n{}", &g[g.find("[[syncs]]").unwrap()..]),
            "syncs[1].name",
            &["used twice"],
        ),
        c(
            "a destination that does not exist",
            with("destinations = [\"mp\"]", "destinations = [\"nope\"]"),
            "syncs[0].destinations",
            &["nope"],
        ),
        c(
            "no destination at all",
            with("destinations = [\"mp\"]", "destinations = []"),
            "syncs[0].destinations",
            &["at least one"],
        ),
        c(
            "a warehouse that does not exist",
            with("warehouse = \"wh\"", "warehouse = \"dwh\""),
            "syncs[0].warehouse",
            &["dwh"],
        ),
        c(
            "table and query",
            append("query = \"SELECT 1\""),
            "syncs[0].query",
            &["not both"],
        ),
        c(
            "neither table nor query",
            with("table = \"ev\"", ""),
            "syncs[0].table",
            &["missing"],
        ),
        c(
            "warehouse without a type",
            with("type = \"duckdb\"", ""),
            "warehouses.wh",
            &["type"],
        ),
        c(
            "unknown warehouse type",
            with("type = \"duckdb\"", "type = \"oracle\""),
            "warehouses.wh",
            &["unknown variant `oracle`"],
        ),
        c(
            "unknown destination type",
            with("type = \"kafka\"", "type = \"s3\""),
            "destinations.k",
            &["unknown variant `s3`"],
        ),
        c(
            "unknown region",
            with(
                "project_id = \"42\"",
                "project_id = \"42\"\nregion = \"asia\"",
            ),
            "destinations.mp.region",
            &["unknown variant `asia`"],
        ),
        c(
            "unknown compression",
            with(
                "brokers = \"127.0.0.1:9\"",
                "brokers = \"127.0.0.1:9\"\ncompression = \"zstd\"",
            ),
            "destinations.k.compression",
            &["unknown variant `zstd`"],
        ),
        c(
            "events without a time column",
            with("time_column = \"ts\"", ""),
            "syncs[0].mapping.time_column",
            &["missing"],
        ),
        c(
            "events without an event name",
            with("event_name_column = \"name\"", ""),
            "syncs[0].mapping.event_name",
            &["missing"],
        ),
        c(
            "unknown time unit",
            with(
                "time_column = \"ts\"",
                "time_column = \"ts\"\ntime_unit = \"hours\"",
            ),
            "syncs[0].mapping.time_unit",
            &["unknown variant `hours`"],
        ),
        c(
            "lookup without a key",
            |g: &str| {
                g.replacen("table_type = \"events\"", "table_type = \"lookup\"", 1)
                    .replacen(SYNC_LINE, "mode = \"full\"", 1)
            },
            "syncs[0].primary_key",
            &["exactly one key column"],
        ),
        c(
            "lookup with two key columns",
            |g: &str| {
                g.replacen("table_type = \"events\"", "table_type = \"lookup\"", 1)
                    .replacen(
                        SYNC_LINE,
                        "mode = \"full\"\nprimary_key = [\"a\", \"b\"]",
                        1,
                    )
            },
            "syncs[0].primary_key",
            &["exactly one key column"],
        ),
        c(
            "append profiles without an insert-time column",
            |g: &str| g.replacen("table_type = \"events\"", "table_type = \"users\"", 1),
            "syncs[0].mapping.insert_time_column",
            &["missing"],
        ),
        c(
            "state_dir of the wrong type",
            with("state_dir = \".state\"", "state_dir = 5"),
            "state_dir",
            &["invalid type"],
        ),
        c(
            "service listen address without a port",
            |g: &str| format!("{g}\n[service]\nlisten = \"localhost\""),
            "service.listen",
            &["localhost"],
        ),
        c(
            "unknown anomaly action",
            |g: &str| format!("{g}\n[alerts]\non_anomaly = \"panic\""),
            "alerts.on_anomaly",
            &["unknown variant `panic`"],
        ),
        c(
            "a TOML syntax error",
            |g: &str| format!("{g}\n[syncs.mapping\n"),
            "(syntax)",
            &["line"],
        ),
        c(
            "a key written twice",
            with("table = \"ev\"", "table = \"ev\"\ntable = \"ev2\""),
            "(syntax)",
            &["duplicate key"],
        ),
    ]
}

#[test]
fn bad_configs_name_the_key_and_never_panic() {
    std::env::remove_var("WHARF_BAD_INPUT_UNSET");
    Config::parse(GOOD, "wharf.toml").expect("the base config is good");
    let mut failures = Vec::new();
    let cases = config_cases();
    for (what, edit, key, words) in &cases {
        let text = edit(GOOD);
        let result = std::panic::catch_unwind(|| Config::parse(&text, "wharf.toml"));
        match result {
            Err(_) => failures.push(format!("{what}: panicked")),
            Ok(Ok(_)) => failures.push(format!("{what}: accepted")),
            Ok(Err(e)) => {
                let shown = e.to_string();
                if e.key != *key || e.file != "wharf.toml" {
                    failures.push(format!("{what}: key `{}` (wanted `{key}`): {shown}", e.key));
                }
                for w in words {
                    if !shown.contains(w) {
                        failures.push(format!("{what}: message lacks {w:?}: {shown}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 40);
}

/// One data case: a table `ev` (created by `sql`), synced as events (`mapping`) into the
/// receiver. Either the run succeeds and every row is delivered or rejected with a reason, or
/// it fails with an error holding `error_words`.
struct DataCase {
    what: &'static str,
    sql: String,
    mapping: &'static str,
    rows: u64,
    rejected: Option<u64>,
    error_words: &'static [&'static str],
    reason_words: &'static [&'static str],
}

fn data_cases() -> Vec<DataCase> {
    const M: &str = "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"";
    const MJ: &str = "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\nproperties_column = \"props\"";
    let base = |cols: &str, rows: &str| {
        format!("CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i) AS ts, 'u' || i AS uid{cols} FROM range({rows}) t(i);")
    };
    let ok =
        |what, sql: String, mapping, rows, rejected: u64, reason_words: &'static [&'static str]| {
            DataCase {
                what,
                sql,
                mapping,
                rows,
                rejected: Some(rejected),
                error_words: &[],
                reason_words,
            }
        };
    let many_columns: String = (0..300).map(|c| format!(", i + {c} AS c{c}")).collect();
    let deep_json = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    vec![
        ok("NULL in every value column", "CREATE TABLE ev (name VARCHAR, ts TIMESTAMP, uid VARCHAR, x INTEGER); INSERT INTO ev VALUES (NULL, NULL, NULL, NULL), ('E', TIMESTAMP '2024-01-01', NULL, NULL);".into(), M, 2, 1, &["event name"]),
        ok("NaN and infinities in a DOUBLE", base(", CASE i WHEN 0 THEN 'nan'::DOUBLE WHEN 1 THEN 'inf'::DOUBLE ELSE '-inf'::DOUBLE END AS f", "3"), M, 3, 0, &[]),
        ok("invalid UTF-8 in a BLOB", base(", '\\xff\\xfe\\x00'::BLOB AS b", "2"), M, 2, 0, &[]),
        ok("a 10 MB cell", base(", repeat('x', 10 * 1024 * 1024) AS big", "1"), M, 1, 1, &["MB"]),
        ok("JSON nested 1,000 deep", base(&format!(", '{{\"deep\": {deep_json}}}'::JSON AS props"), "1"), MJ, 1, 1, &["recursion limit"]),
        ok("a JSON column that is not JSON", base(", 'not json {' AS props", "2"), MJ, 2, 2, &["JSON"]),
        ok("a JSON column holding an array", base(", '[1, 2]' AS props", "1"), MJ, 1, 1, &["object"]),
        ok("300 columns", base(&many_columns, "2"), M, 2, 2, &["properties"]),
        ok("an integer beyond 2^64", base(", (2::HUGEINT ** 70)::HUGEINT AS huge", "1"), M, 1, 0, &[]),
        ok("the earliest timestamp", "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '0001-01-01 00:00:00' AS ts, 'u1' AS uid;".into(), M, 1, 1, &["time"]),
        ok("the latest timestamp", "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '9999-12-31 23:59:59' AS ts, 'u1' AS uid;".into(), M, 1, 1, &["time"]),
        ok("a negative epoch time", "CREATE TABLE ev AS SELECT 'E' AS name, -5 AS ts, 'u1' AS uid;".into(), M, 1, 1, &["time"]),
        ok("a placeholder user id", "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '2024-01-01' AS ts, 'undefined' AS uid;".into(), M, 1, 1, &["placeholder"]),
        ok("an empty event name", "CREATE TABLE ev AS SELECT '' AS name, TIMESTAMP '2024-01-01' AS ts, 'u1' AS uid;".into(), M, 1, 1, &["event"]),
        ok("a NULL event name", "CREATE TABLE ev AS SELECT NULL::VARCHAR AS name, TIMESTAMP '2024-01-01' AS ts, 'u1' AS uid;".into(), M, 1, 1, &["event"]),
        ok("unicode everywhere", "CREATE TABLE ev AS SELECT 'Kauf 購入 🛒' AS name, TIMESTAMP '2024-01-01' AS ts, 'usér-😀' AS uid, 'naïve' AS \"prop é 🔑\";".into(), M, 1, 0, &[]),
        ok("a 300-byte string property", base(", repeat('é', 150) AS s", "1"), M, 1, 0, &[]),
        ok("decimals at their extremes", base(", 99999999999999999999999999.9999999999::DECIMAL(36,10) AS d, -0.0000000001::DECIMAL(36,10) AS e", "1"), M, 1, 0, &[]),
        ok("a list of structs and a map", base(", [{'a': 1, 'b': 'x'}, {'a': NULL, 'b': NULL}] AS l, MAP {'k': [1, 2]} AS m", "1"), M, 1, 0, &[]),
        ok("duplicate keys in a JSON column", base(", '{\"a\": 1, \"b\": 2, \"a\": 3}' AS props", "1"), MJ, 1, 0, &[]),
        ok("an unpaired surrogate escape in a JSON column", base(", '{\"a\": \"\\ud800\"}' AS props", "1"), MJ, 1, 1, &["JSON"]),
        ok("a JSON key that a column also has", base(", '{\"uid\": \"other\", \"x\": 1}' AS props, 'col' AS x", "1"), MJ, 1, 0, &[]),
        ok("duplicate rows (the same $insert_id)", "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '2024-01-01' AS ts, 'u1' AS uid FROM range(3);".into(), M, 3, 0, &[]),
        ok("a DATE as the time", "CREATE TABLE ev AS SELECT 'E' AS name, DATE '2024-02-29' AS ts, 'u1' AS uid;".into(), M, 1, 0, &[]),
        ok("a TIMESTAMPTZ with an offset", "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMPTZ '2024-01-01 12:00:00+05:30' AS ts, 'u1' AS uid;".into(), M, 1, 0, &[]),
        DataCase {
            what: "a time column of the wrong type",
            sql: "CREATE TABLE ev AS SELECT 'E' AS name, 'yesterday' AS ts, 'u1' AS uid;".into(),
            mapping: M,
            rows: 1,
            rejected: None,
            error_words: &["column `ts`", "time_column"],
            reason_words: &[],
        },
        DataCase {
            what: "a column the mapping names that is not there",
            sql: "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '2024-01-01' AS ts;".into(),
            mapping: M,
            rows: 1,
            rejected: None,
            error_words: &["column `uid`", "user_id_column"],
            reason_words: &[],
        },
    ]
}

#[test]
fn bad_data_is_rejected_with_reasons_or_refused_clearly_and_never_lost() {
    let mut failures = Vec::new();
    let cases = data_cases();
    for case in &cases {
        let fx = Fixture::new();
        fx.sql(&case.sql);
        let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
        fx.write_config(
            "wharf.toml",
            &events_config(".state", &receiver.base_url(), "ev", case.mapping),
        );
        let out = fx.wharf(&["sync", "s", "--summary-json"], &[]);
        let all = text(&out);
        if all.contains("panicked") {
            failures.push(format!("{}: panicked:\n{all}", case.what));
            continue;
        }
        match case.rejected {
            None => {
                if out.status.success() {
                    failures.push(format!("{}: accepted:\n{all}", case.what));
                }
                for w in case.error_words {
                    if !all.contains(w) {
                        failures.push(format!("{}: error lacks {w:?}:\n{all}", case.what));
                    }
                }
            }
            Some(rejected) => {
                if !out.status.success() {
                    failures.push(format!("{}: failed:\n{all}", case.what));
                    continue;
                }
                let summary: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let (read, delivered, rej) = (
                    summary["rows_read"].as_u64().unwrap_or(0),
                    summary["delivered"].as_u64().unwrap_or(0),
                    summary["rejected"].as_u64().unwrap_or(0),
                );
                if read != case.rows || delivered + rej != case.rows || rej != rejected {
                    failures.push(format!(
                        "{}: read {read}, delivered {delivered}, rejected {rej} (wanted {} rows, {rejected} rejected): {summary}",
                        case.what, case.rows
                    ));
                }
                let events = receiver.stats().events_received;
                if events != delivered {
                    failures.push(format!(
                        "{}: the receiver holds {events} events, {delivered} reported delivered",
                        case.what
                    ));
                }
                let rejects = read_ndjson(&fx.path(".state/rejects/s.ndjson"));
                if rejects.len() as u64 != rej {
                    failures.push(format!(
                        "{}: {} lines in the rejects file for {rej} rejects",
                        case.what,
                        rejects.len()
                    ));
                }
                for r in &rejects {
                    let reason = r["reason"].as_str().unwrap_or("");
                    if !case.reason_words.iter().any(|w| reason.contains(w)) {
                        failures.push(format!(
                            "{}: reject reason {reason:?} names none of {:?}",
                            case.what, case.reason_words
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {} data cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 20);
}
