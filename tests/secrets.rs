//! Secrets never leave: failing and succeeding syncs with secrets in every place a config holds
//! them — a PostgreSQL password, wrong and right (the role `wharf_password` must give it:
//! `tests/postgres-up.sh`), a Snowflake private key that is not a key, inline and in a key file,
//! a Databricks token, a warehouse URL with credentials in it, Mixpanel credentials the destination refuses
//! (401), Kafka client properties — and every output searched for each secret: stdout and
//! stderr of every command (logs at trace level), the service's API answers, its web page and
//! metrics, the rejects file and the change log.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, text, Fixture};
use wharf::receiver::ReceiverAuth;

const PG_PASSWORD: &str = "pg-Secret-4d1c9a";
const PG_WRONG: &str = "pg-Wrong-Secret-8e7f6a";
const SF_FILE_KEY: &str = "sf-File-Secret-2b3c4d";
const MP_OK_SECRET: &str = "mp-Ok-Secret-1f2e3d";
const SF_KEY: &str = "sf-Key-Secret-77e1b0";
const DB_TOKEN: &str = "dapi-Secret-0b2e55";
const URL_SECRET: &str = "url-Secret-5c6d7e";
const MP_SECRET: &str = "mp-Secret-a9b8c7";
const KAFKA_SECRET: &str = "kafka-Secret-3f2e1d";
const API_TOKEN: &str = "api-Token-Secret-6a5b4c";

fn secrets() -> [&'static str; 10] {
    [
        PG_PASSWORD,
        PG_WRONG,
        SF_FILE_KEY,
        MP_OK_SECRET,
        SF_KEY,
        DB_TOKEN,
        URL_SECRET,
        MP_SECRET,
        KAFKA_SECRET,
        API_TOKEN,
    ]
}

fn envs() -> Vec<(&'static str, String)> {
    vec![
        ("WHARF_T_PG", PG_PASSWORD.into()),
        ("WHARF_T_PG_WRONG", PG_WRONG.into()),
        ("WHARF_T_MP_OK", MP_OK_SECRET.into()),
        (
            "WHARF_T_SF",
            format!("-----BEGIN PRIVATE KEY-----\n{SF_KEY}\n-----END PRIVATE KEY-----\n"),
        ),
        ("WHARF_T_DB", DB_TOKEN.into()),
        ("WHARF_T_MP", MP_SECRET.into()),
        ("WHARF_T_KAFKA", KAFKA_SECRET.into()),
        ("WHARF_T_API", API_TOKEN.into()),
        ("RUST_LOG", "trace".into()),
    ]
}

fn config(receiver: &str, port: u16) -> String {
    format!(
        r#"state_dir = ".state"
[service]
listen = "127.0.0.1:{port}"
token = "${{WHARF_T_API}}"
retry_initial = "200ms"
retry_max = "400ms"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[warehouses.pg]
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "wharf_password"
password = "${{WHARF_T_PG_WRONG}}"
sslmode = "disable"
[warehouses.pg_ok]
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "wharf_password"
password = "${{WHARF_T_PG}}"
sslmode = "disable"
[warehouses.sf_file]
type = "snowflake"
account = "acme"
user = "loader"
private_key_file = "bad_key.p8"
database = "db"
url = "http://127.0.0.1:9"
[warehouses.sf]
type = "snowflake"
account = "acme"
user = "loader"
private_key = "${{WHARF_T_SF}}"
database = "db"
url = "http://loader:{URL_SECRET}@127.0.0.1:9"
[warehouses.dbx]
type = "databricks"
host = "http://token:{URL_SECRET}@127.0.0.1:9"
token = "${{WHARF_T_DB}}"
warehouse_id = "w1"
[destinations.mp]
type = "mixpanel"
api_host = "{receiver}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "${{WHARF_T_MP}}" }}
initial_backoff = "50ms"
max_backoff = "100ms"
give_up_after = "1s"
[destinations.mp_ok]
type = "mixpanel"
api_host = "{receiver}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "${{WHARF_T_MP_OK}}" }}
[destinations.file]
type = "file"
path = "out.ndjson"
[destinations.k]
type = "kafka"
brokers = "127.0.0.1:9"
properties = {{ "sasl.password" = "${{WHARF_T_KAFKA}}" }}
delivery_timeout = "1s"
give_up_after = "1s"
[[syncs]]
name = "refused"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["mp"]
schedule = "1s"
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
[[syncs]]
name = "ok"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["file"]
schedule = "1s"
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
[[syncs]]
name = "kafka"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["k"]
schedule = "manual"
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
[[syncs]]
name = "pg"
warehouse = "pg"
table = "public.nothing"
table_type = "users"
mode = "mirror"
destinations = ["file"]
schedule = "1s"
[syncs.mapping]
user_id_column = "id"
[[syncs]]
name = "pg_ok"
warehouse = "pg_ok"
query = "SELECT 'u1' AS id, 'x' AS name"
table_type = "users"
mode = "full"
destinations = ["file"]
primary_key = ["id"]
[syncs.mapping]
user_id_column = "id"
[[syncs]]
name = "ev_mirror"
warehouse = "wh"
table = "ev_keyed"
table_type = "events"
mode = "mirror"
primary_key = ["id"]
destinations = ["mp_ok"]
schedule = "manual"
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
[[syncs]]
name = "sf_file"
warehouse = "sf_file"
table = "ev"
table_type = "users"
mode = "full"
primary_key = ["id"]
destinations = ["file"]
schedule = "manual"
[syncs.mapping]
user_id_column = "id"
[[syncs]]
name = "sf"
warehouse = "sf"
table = "ev"
table_type = "users"
mode = "full"
primary_key = ["id"]
destinations = ["file"]
schedule = "1s"
[syncs.mapping]
user_id_column = "id"
[[syncs]]
name = "dbx"
warehouse = "dbx"
table = "ev"
table_type = "users"
mode = "full"
primary_key = ["id"]
destinations = ["file"]
schedule = "1s"
[syncs.mapping]
user_id_column = "id"
"#
    )
}

fn run_wharf(f: &Fixture, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args).current_dir(f.dir.path());
    for (k, v) in envs() {
        cmd.env(k, v);
    }
    cmd.output().expect("run wharf")
}

fn get(port: u16, path: &str, token: Option<&str>) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.timeout(Duration::from_secs(10)).send().await {
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("error: {e}"),
        }
    })
}

fn assert_no_secret(place: &str, content: &str) {
    for s in secrets() {
        assert!(
            !content.contains(s),
            "{place} holds the secret {s}:\n{content}"
        );
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("sa:{MP_SECRET}"));
    assert!(
        !content.contains(&b64),
        "{place} holds the encoded Mixpanel credentials"
    );
}

#[test]
fn no_secret_reaches_any_output() {
    let f = Fixture::new();
    f.sql(
        "CREATE TABLE ev AS SELECT 'E' AS name, TIMESTAMP '2024-01-01' + to_seconds(i) AS ts,
           'u' || i AS uid FROM range(20) t(i);
         INSERT INTO ev VALUES ('E', NULL, 'bad-row');
         CREATE TABLE ev_keyed AS SELECT i AS id, 'E' AS name,
           TIMESTAMP '2024-01-01' + to_seconds(i) AS ts, 'u' || i AS uid FROM range(5) t(i);",
    );
    // The role that must give its password (pg_hba: scram-sha-256), with the right one.
    common::pg::exec(
        5432,
        "test",
        &format!(
            "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wharf_password') THEN
             CREATE ROLE wharf_password LOGIN;
           END IF;
         END $$;
         ALTER ROLE wharf_password PASSWORD '{PG_PASSWORD}';"
        ),
    );
    // A key file that holds no key, but a secret.
    std::fs::write(
        f.path("bad_key.p8"),
        format!("-----BEGIN PRIVATE KEY-----\n{SF_FILE_KEY}\n-----END PRIVATE KEY-----\n"),
    )
    .expect("key file");
    // The receiver wants other credentials: the Mixpanel destination gets 401.
    let receiver = f.receiver(
        "recv",
        ReceiverAuth::ServiceAccount {
            username: "sa".into(),
            secret: MP_OK_SECRET.into(),
            project_id: "42".into(),
        },
    );
    let port = free_port();
    f.write_config("wharf.toml", &config(&receiver.base_url(), port));
    let mut seen = Vec::new();
    for args in [
        vec!["check"],
        vec!["preview", "refused"],
        vec!["sync", "refused"],
        vec!["sync", "ok"],
        vec!["sync", "kafka"],
        vec!["sync", "pg"],
        vec!["sync", "pg_ok"],
        vec!["sync", "ev_mirror"],
        vec!["sync", "sf"],
        vec!["sync", "sf_file"],
        vec!["sync", "dbx"],
        vec!["status"],
        vec!["history", "refused"],
    ] {
        let out = run_wharf(&f, &args);
        assert_no_secret(&format!("`wharf {}`", args.join(" ")), &text(&out));
        seen.push((args, out.status.success()));
    }
    // The runs failed and succeeded as meant: what was searched covers both.
    let ok = |cmd: &str| seen.iter().find(|(a, _)| a.join(" ") == cmd).unwrap().1;
    assert!(
        ok("sync ok") && ok("sync pg_ok") && ok("sync ev_mirror"),
        "{seen:?}"
    );
    for failing in [
        "sync refused",
        "sync kafka",
        "sync pg",
        "sync sf",
        "sync sf_file",
        "sync dbx",
    ] {
        assert!(!ok(failing), "`wharf {failing}` should fail: {seen:?}");
    }
    // The wrong password was refused by the server for that reason.
    let pg = run_wharf(&f, &["sync", "pg"]);
    assert!(
        text(&pg).contains("password authentication failed"),
        "{}",
        text(&pg)
    );
    assert_no_secret("`wharf sync pg`", &text(&pg));
    // A deleted event cannot be applied through Mixpanel: the mirror writes it to the change
    // log, one of the files searched below.
    f.sql("DELETE FROM ev_keyed WHERE id = 3");
    let mirror = run_wharf(&f, &["sync", "ev_mirror"]);
    assert!(mirror.status.success(), "{}", text(&mirror));
    assert_no_secret("`wharf sync ev_mirror`", &text(&mirror));

    // The service: its log, API answers, page and metrics while syncs fail and succeed.
    let log = f.path("service.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(["run"])
        .current_dir(f.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, v) in envs() {
        cmd.env(k, v);
    }
    let mut service = cmd.spawn().expect("start wharf run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(port, "/healthz", None).starts_with("200") {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut answers = String::new();
    for path in [
        "/",
        "/status",
        "/syncs",
        "/syncs/refused",
        "/syncs/refused/runs",
        "/syncs/pg/runs",
        "/syncs/sf/runs",
        "/syncs/dbx/runs",
        "/metrics",
    ] {
        answers.push_str(&get(port, path, Some(API_TOKEN)));
        answers.push('\n');
        // Without the token: refused, and the refusal holds no secret either.
        answers.push_str(&get(port, path, None));
        answers.push('\n');
    }
    let _ = service.kill();
    let _ = service.wait();
    assert!(
        answers.contains("401"),
        "some answers were refused without the token"
    );
    assert!(
        answers.contains("FAILED"),
        "the API shows failed runs: {answers}"
    );
    assert_no_secret("the service's API, page and metrics", &answers);
    assert_no_secret(
        "the service's log",
        &std::fs::read_to_string(&log).unwrap_or_default(),
    );

    // Files wharf writes: rejects, the change log, the output file.
    let rejects = std::fs::read_to_string(f.path(".state/rejects/ok.ndjson")).unwrap_or_default();
    assert!(
        rejects.contains("time column `ts` is NULL"),
        "the NULL-time row was rejected: {rejects}"
    );
    let changes = std::fs::read_to_string(f.path(".state/changes/ev_mirror.ndjson"))
        .expect("the mirror's change log");
    assert!(changes.contains("delete"), "{changes}");
    let out = std::fs::read_to_string(f.path("out.ndjson")).expect("the file destination's output");
    assert!(out.contains("u1"), "pg_ok delivered its row: {out}");
    for file in [
        ".state/rejects/ok.ndjson",
        ".state/rejects/refused.ndjson",
        ".state/changes/ev_mirror.ndjson",
        "out.ndjson",
    ] {
        assert_no_secret(
            file,
            &std::fs::read_to_string(f.path(file)).unwrap_or_default(),
        );
    }
}
