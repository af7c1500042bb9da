//! Crashes at random moments and at commit boundaries, at CI sizes (the harness is in
//! `tests/common/chaos.rs`; `cargo bench --bench chaos` runs it at full size).

mod common;
#[path = "common/chaos.rs"]
mod harness;

use harness::Sizes;

#[test]
fn append_killed_at_random_moments_delivers_every_row_once() {
    harness::append_killed_at_random_moments_delivers_every_row_once(&Sizes::from_env(50_000, 8));
}

#[test]
fn full_profiles_killed_at_random_moments_are_exact_after_one_clean_run() {
    harness::full_profiles_killed_at_random_moments_are_exact_after_one_clean_run(
        &Sizes::from_env(20_000, 8),
    );
}

#[test]
fn snapshot_mirror_killed_at_random_moments_is_exact_after_one_clean_run() {
    harness::snapshot_mirror_killed_at_random_moments_is_exact_after_one_clean_run(
        &Sizes::from_env(20_000, 8),
    );
}

#[test]
fn groups_and_lookup_tables_killed_at_random_moments_are_exact_after_one_clean_run() {
    harness::groups_and_lookup_tables_killed_at_random_moments_are_exact_after_one_clean_run(
        &Sizes::from_env(20_000, 8),
    );
}

#[test]
fn logical_mirror_killed_at_random_moments_never_goes_back_in_time() {
    harness::postgres::logical_mirror_killed_at_random_moments_never_goes_back_in_time(
        &Sizes::from_env(20_000, 8),
    );
}
