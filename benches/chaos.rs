//! The chaos harness at full size (`tests/common/chaos.rs`; `tests/chaos.rs` runs it small in
//! CI): a 1,000,000-row append backfill, a full sync and snapshot-diff mirrors of 300,000
//! rows, and a PostgreSQL logical-decoding mirror of 300,000 rows under a writer — each with 15
//! kills (random moments and commit boundaries), into a receiver failing 10% of requests.
//!
//! `cargo bench --bench chaos` (needs PostgreSQL as `.ci/run` starts it, and Kafka's jars from
//! `tests/kafka-up.sh`). `WHARF_CHAOS_ROWS`, `WHARF_CHAOS_KILLS` and `WHARF_CHAOS_SEED`
//! override the sizes and replay a case; `WHARF_CHAOS_CASES=append,full` runs only some.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/chaos.rs"]
mod harness;

use std::time::Instant;

use harness::Sizes;

type Case = (&'static str, u64, fn(&Sizes));

fn main() {
    let cases: [Case; 5] = [
        (
            "append",
            1_000_000,
            harness::append_killed_at_random_moments_delivers_every_row_once,
        ),
        (
            "full",
            300_000,
            harness::full_profiles_killed_at_random_moments_are_exact_after_one_clean_run,
        ),
        (
            "mirror",
            300_000,
            harness::snapshot_mirror_killed_at_random_moments_is_exact_after_one_clean_run,
        ),
        (
            "groups_lookup",
            300_000,
            harness::groups_and_lookup_tables_killed_at_random_moments_are_exact_after_one_clean_run,
        ),
        (
            "postgres",
            300_000,
            harness::postgres::logical_mirror_killed_at_random_moments_never_goes_back_in_time,
        ),
    ];
    let only = std::env::var("WHARF_CHAOS_CASES").ok();
    for (name, rows, case) in cases {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|c| c.trim() == name))
        {
            continue;
        }
        let sizes = Sizes::from_env(rows, 15);
        let started = Instant::now();
        println!("== {name}: {} rows, {} kills", sizes.rows, sizes.kills);
        case(&sizes);
        println!(
            "== {name}: exact after the clean run ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
}
