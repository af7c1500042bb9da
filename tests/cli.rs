//! The command line: bad configs give a non-zero exit and a message naming the problem;
//! secrets never appear in any output; init → check → preview → sync works on the demo.

mod common;

use common::{events_config, text, Fixture};
use wharf::receiver::ReceiverAuth;

fn fixture_with_table() -> Fixture {
    let fx = Fixture::new();
    fx.sql(
        "CREATE TABLE ev (id BIGINT, name VARCHAR, ts TIMESTAMP, uid VARCHAR);
         INSERT INTO ev VALUES (1, 'A', TIMESTAMP '2024-01-01', 'u1'), (2, 'B', TIMESTAMP '2024-01-02', 'u2');",
    );
    fx
}

const MAPPING: &str = r#"event_name_column = "name"
time_column = "ts"
user_id_column = "uid""#;

fn assert_fails(fx: &Fixture, config: &str, args: &[&str], needles: &[&str]) {
    fx.write_config("wharf.toml", config);
    let out = fx.wharf(args, &[]);
    assert!(!out.status.success(), "expected failure: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {}", text(&out));
    }
}

#[test]
fn bad_configs_are_named() {
    let fx = fixture_with_table();
    let good = events_config(".state", "http://127.0.0.1:9", "ev", MAPPING);
    // Unknown key.
    assert_fails(
        &fx,
        &good.replace("table = \"ev\"", "tabel = \"ev\""),
        &["check"],
        &["wharf.toml", "syncs[0]", "unknown field `tabel`"],
    );
    // Wrong type.
    assert_fails(
        &fx,
        &good.replace("mode = \"append\"", "mode = 3"),
        &["check"],
        &["syncs[0].mode", "invalid type"],
    );
    // A wrong value inside a warehouse or destination (tables chosen by `type`) names its key.
    assert_fails(
        &fx,
        &good.replace(
            "path = \"wh.duckdb\"",
            "path = \"wh.duckdb\"\nmemory_limit = 3",
        ),
        &["check"],
        &["warehouses.wh.memory_limit", "invalid type"],
    );
    assert_fails(
        &fx,
        &good.replace(
            "project_id = \"42\"",
            "project_id = \"42\"\nregion = \"asia\"",
        ),
        &["check"],
        &["destinations.mp.region", "unknown variant `asia`"],
    );
    // Missing key.
    assert_fails(
        &fx,
        &good.replace("time_column = \"ts\"", ""),
        &["check"],
        &["syncs[0].mapping.time_column", "missing"],
    );
    // Unset ${VAR}.
    assert_fails(
        &fx,
        &good.replace("\"test-secret\"", "\"${WHARF_TEST_UNSET_SECRET}\""),
        &["check"],
        &[
            "destinations.mp.service_account.secret",
            "WHARF_TEST_UNSET_SECRET",
            "not set",
        ],
    );
    // Missing table.
    assert_fails(
        &fx,
        &events_config(".state", "http://127.0.0.1:9", "nope", MAPPING),
        &["preview", "s"],
        &["table `nope` does not exist"],
    );
    // Missing column.
    assert_fails(
        &fx,
        &good.replace("user_id_column = \"uid\"", "user_id_column = \"user\""),
        &["sync", "s"],
        &["column `user`", "user_id_column", "id, name, ts, uid"],
    );
    // A column of the wrong type for its role.
    assert_fails(
        &fx,
        &good.replace("time_column = \"ts\"", "time_column = \"name\""),
        &["sync", "s"],
        &["column `name`", "time_column", "TIMESTAMP"],
    );
    // No config at all.
    let out = fx.wharf(&["--config", "missing.toml", "check"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wharf init"),
        "{}",
        text(&out)
    );
}

#[test]
fn secrets_never_appear_in_output_or_logs() {
    let fx = fixture_with_table();
    let secret = "s3cr3t-Value-9f8e7d";
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("sa:{secret}"))
    };
    // The receiver expects other credentials: the sync fails with 401.
    let receiver = fx.receiver(
        "recv",
        ReceiverAuth::ServiceAccount {
            username: "sa".into(),
            secret: "the-right-one".into(),
            project_id: "42".into(),
        },
    );
    let config = events_config(".state", &receiver.base_url(), "ev", MAPPING)
        .replace("\"test-secret\"", "\"${WHARF_TEST_SECRET}\"");
    fx.write_config("wharf.toml", &config);
    let envs = [("WHARF_TEST_SECRET", secret), ("RUST_LOG", "trace")];
    let mut outputs = Vec::new();
    for args in [
        vec!["check"],
        vec!["preview", "s"],
        vec!["sync", "s"],
        vec!["status"],
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(&args).current_dir(fx.dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        outputs.push((args, cmd.output().unwrap()));
    }
    for (args, out) in &outputs {
        let all = text(out);
        assert!(!all.contains(secret), "{args:?} printed the secret: {all}");
        assert!(
            !all.contains(&b64),
            "{args:?} printed the encoded secret: {all}"
        );
    }
    let sync = &outputs[2].1;
    assert!(!sync.status.success());
    assert!(
        String::from_utf8_lossy(&sync.stderr).contains("refused the credentials"),
        "{}",
        text(sync)
    );
    // A bad config that involves the secret key does not print the value either.
    let bad = config.replace(
        "secret = \"${WHARF_TEST_SECRET}\"",
        "secret = \"${WHARF_TEST_SECRET}\", extra = 1",
    );
    fx.write_config("wharf.toml", &bad);
    let out = fx.wharf(&["check"], &[("WHARF_TEST_SECRET", secret)]);
    assert!(!out.status.success());
    assert!(!text(&out).contains(secret), "{}", text(&out));
}

#[test]
fn init_check_preview_and_sync_the_demo() {
    let fx = Fixture::new();
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    let out = fx.wharf(
        &[
            "init",
            "--events",
            "3000",
            "--api-host",
            &receiver.base_url(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = fx.wharf(&["check"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok    sync demo_events"), "{stdout}");
    let out = fx.wharf(&["preview", "demo_events", "--limit", "3"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"$insert_id\""), "{stdout}");
    assert!(stdout.contains("properties : "), "{stdout}");
    let out = fx.wharf(&["sync", "demo_events"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, 3000);
    // The file destination gets exactly the same records.
    let out = fx.wharf(&["sync", "demo_events_file"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(fx.path("out/events.ndjson")).unwrap();
    assert_eq!(lines.lines().count(), 3000);
    let out = fx.wharf(&["status"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCEEDED"));
}

#[test]
fn quickstart_runs_the_demo_end_to_end() {
    let fx = Fixture::new();
    let out = fx.wharf(&["quickstart", "--dir", "qs", "--events", "5000"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the receiver holds 6000 events (6000 unique"),
        "{stdout}"
    );
    assert!(
        stdout.contains("second run: sync demo_events run 2: read 1000 rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: every demo event arrived exactly once."),
        "{stdout}"
    );
    // Running it again starts from a clean demo.
    let again = fx.wharf(&["quickstart", "--dir", "qs", "--events", "2000"], &[]);
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn reset_makes_a_sync_start_over() {
    let fx = fixture_with_table();
    let receiver = fx.receiver("recv", ReceiverAuth::AnyCredentials);
    fx.write_config(
        "wharf.toml",
        &events_config(".wharf", &receiver.base_url(), "ev", MAPPING),
    );
    let out = fx.wharf(&["reset", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to reset"));
    for _ in 0..2 {
        let out = fx.wharf(&["sync", "s"], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        receiver.stats().events_accepted,
        2,
        "the second run sent nothing"
    );
    let out = fx.wharf(&["reset", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("forgot the committed watermark"),
        "{}",
        text(&out)
    );
    let out = fx.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stats = receiver.stats();
    assert_eq!(stats.events_accepted, 4, "the table again");
    assert_eq!(stats.unique_events, 2, "deduplicated by $insert_id");
    let out = fx.wharf(&["reset", "nope"], &[]);
    assert!(!out.status.success());
    let out = fx.wharf(&["history", "s", "--json"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        3,
        "history kept"
    );
}

/// Log lines going to a pipe or a file carry no ANSI colour codes (they do on a terminal,
/// unless `NO_COLOR` is set).
#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    let fx = fixture_with_table();
    let rx = fx.receiver("rx", ReceiverAuth::AnyCredentials);
    fx.write_config(
        "wharf.toml",
        &events_config(".state", &rx.base_url(), "ev", MAPPING),
    );
    let out = fx.wharf(&["sync", "s"], &[("RUST_LOG", "info")]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run committed"), "{}", text(&out));
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a piped log: {err:?}"
    );
    // On a terminal (a pseudo-terminal made by util-linux's `script`) the log is coloured,
    // unless NO_COLOR is set (to anything but the empty string).
    let on_terminal = |no_color: Option<&str>| {
        let mut cmd = std::process::Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} sync s", env!("CARGO_BIN_EXE_wharf")),
            "/dev/null",
        ])
        .current_dir(fx.path(""))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("run wharf under script");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A colour is an SGR sequence, ESC [ digits;… m (the progress bar's line clearing, ESC [2K,
    // is not one).
    let sgr = |s: &str| {
        s.split('\u{1b}').skip(1).any(|rest| {
            rest.strip_prefix('[').is_some_and(|r| {
                r.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';')
                    .starts_with('m')
            })
        })
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("INFO"), "{coloured:?}");
    assert!(sgr(&coloured), "no colour on a terminal: {coloured:?}");
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!sgr(&plain), "colour despite NO_COLOR: {plain:?}");
    assert!(sgr(&on_terminal(Some(""))), "an empty NO_COLOR is unset");
}
