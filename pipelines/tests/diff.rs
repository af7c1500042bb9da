//! The snapshot diff against a brute-force oracle: random tables and random sequences of
//! inserts, updates, deletes, key changes and added nullable columns, with 1, 2 and 4 workers
//! (and with the worker count changing between runs); each run's state is the previous run's
//! new state, as after a commit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use wharf_operators::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use wharf_operators::arrow::datatypes::{DataType, Field, Schema};
use wharf_operators::change::{ChangeOp, ChangeSet};
use wharf_operators::diff::{DiffSpec, Emit};
use wharf_operators::snapshot::{FingerprintVersion, RowHasher};
use wharf_pipelines::diff_run::diff_batches;

/// A row's values: `a`, `b` and (once added) `c`.
type Row = (Option<i64>, Option<String>, Option<i64>);

#[derive(Clone, Debug)]
enum Step {
    Insert(i64, Row),
    Update(usize, Row),
    Delete(usize),
    /// Moves the row at this position to a new key.
    ChangeKey(usize, i64),
    AddColumn,
}

fn row() -> impl Strategy<Value = Row> {
    (
        proptest::option::of(0i64..4),
        proptest::option::of("[ab]{0,2}"),
        proptest::option::of(0i64..3),
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0i64..60, row()).prop_map(|(k, r)| Step::Insert(k, r)),
        (0usize..100, row()).prop_map(|(i, r)| Step::Update(i, r)),
        (0usize..100).prop_map(Step::Delete),
        (0usize..100, 0i64..60).prop_map(|(i, k)| Step::ChangeKey(i, k)),
        Just(Step::AddColumn),
    ]
}

/// One snapshot as the table the connector would read (column `c` only once added).
fn batches(table: &BTreeMap<i64, Row>, with_c: bool, chunk: usize) -> Vec<RecordBatch> {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ];
    if with_c {
        fields.push(Field::new("c", DataType::Int64, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let rows: Vec<(&i64, &Row)> = table.iter().collect();
    rows.chunks(chunk.max(1))
        .map(|part| {
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| *r.0))),
                Arc::new(Int64Array::from_iter(part.iter().map(|r| r.1 .0))),
                Arc::new(StringArray::from_iter(part.iter().map(|r| r.1 .1.clone()))),
            ];
            if with_c {
                cols.push(Arc::new(Int64Array::from_iter(part.iter().map(|r| r.1 .2))));
            }
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect()
}

/// What the oracle expects between two snapshots: (key text, op), sorted.
fn oracle(before: &BTreeMap<i64, Row>, after: &BTreeMap<i64, Row>) -> BTreeSet<(String, ChangeOp)> {
    let mut out = BTreeSet::new();
    for (k, r) in after {
        match before.get(k) {
            None => {
                out.insert((k.to_string(), ChangeOp::Insert));
            }
            Some(old) if old != r => {
                out.insert((k.to_string(), ChangeOp::Update));
            }
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.insert((k.to_string(), ChangeOp::Delete));
        }
    }
    out
}

fn emitted(sets: &[ChangeSet]) -> BTreeSet<(String, ChangeOp)> {
    let mut out = BTreeSet::new();
    for s in sets {
        match s {
            ChangeSet::Rows {
                changes,
                keys,
                rejects,
                ..
            } => {
                assert!(rejects.is_empty());
                for (k, c) in keys.iter().zip(changes) {
                    assert!(out.insert((k.clone(), c.op)), "key {k} emitted twice");
                }
            }
            ChangeSet::Deletes(keys) => {
                for k in keys {
                    assert!(
                        out.insert((k.clone(), ChangeOp::Delete)),
                        "key {k} deleted twice"
                    );
                }
            }
        }
    }
    out
}

/// Applies `steps` to `table` (column `c` exists once `with_c`).
fn apply(table: &mut BTreeMap<i64, Row>, with_c: &mut bool, steps: &[Step]) {
    for s in steps {
        let keys: Vec<i64> = table.keys().copied().collect();
        match s.clone() {
            Step::Insert(k, mut r) => {
                if !*with_c {
                    r.2 = None;
                }
                table.entry(k).or_insert(r);
            }
            Step::Update(i, mut r) if !keys.is_empty() => {
                if !*with_c {
                    r.2 = None;
                }
                table.insert(keys[i % keys.len()], r);
            }
            Step::Delete(i) if !keys.is_empty() => {
                table.remove(&keys[i % keys.len()]);
            }
            Step::ChangeKey(i, k) if !keys.is_empty() && !table.contains_key(&k) => {
                let r = table.remove(&keys[i % keys.len()]).unwrap();
                table.insert(k, r);
            }
            Step::AddColumn => *with_c = true,
            _ => {}
        }
    }
}

fn hasher_for(input: &[RecordBatch], with_c: bool) -> RowHasher {
    let schema = input
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| batches(&[(0, (None, None, None))].into(), with_c, 1)[0].schema());
    RowHasher::new(&schema, &["id".to_string()], &[], &[]).unwrap()
}

/// How a run of [`run_with_failures`] ends.
#[derive(Clone, Debug)]
enum Outcome {
    /// Every change delivered, the state committed.
    Commit,
    /// Killed: the ranges in `unfinished` (bits, of the run's workers) never finished their
    /// part (so sent nothing), and of the others' changes only those picked by `seed` reached
    /// the destination.
    Killed { unfinished: u8, seed: u64 },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Commit),
        (any::<u8>(), any::<u64>())
            .prop_map(|(unfinished, seed)| Outcome::Killed { unfinished, seed }),
    ]
}

/// Runs `steps` where runs may be killed after delivering part of their changes (`outcomes`),
/// into a model destination; the last run commits. After every committed run the destination
/// must equal the table: whatever a killed run delivered is known to the next diffs.
fn run_with_failures(
    steps: &[Vec<Step>],
    outcomes: &[Outcome],
    workers: &[usize],
) -> Result<(), TestCaseError> {
    use wharf_operators::snapshot::{owner, sorted_part_name, PendingSnapshot};
    let dir = tempfile::tempdir().unwrap();
    let mut table: BTreeMap<i64, Row> = BTreeMap::new();
    let mut with_c = false;
    let mut previous: Vec<PathBuf> = Vec::new();
    let mut pending_dirs: Vec<PathBuf> = Vec::new();
    let mut destination: BTreeMap<String, Row> = BTreeMap::new();
    for (run, batch_steps) in steps.iter().enumerate() {
        apply(&mut table, &mut with_c, batch_steps);
        let input = batches(&table, with_c, 3);
        let next_dir = dir.path().join(format!("run-{run}"));
        let workers = workers[run % workers.len()];
        let pending = pending_dirs
            .iter()
            .filter_map(|d| PendingSnapshot::load(d).unwrap())
            .collect();
        let spec = DiffSpec {
            hasher: Arc::new(hasher_for(&input, with_c)),
            previous: previous.clone(),
            pending,
            next_dir: next_dir.clone(),
            spill_dir: dir.path().join("spill"),
            memory_budget: 1 << 30,
            emit: Emit::Changes,
            send_deletes: true,
        };
        let (sets, counts) = diff_batches(workers, input, spec).map_err(TestCaseError::fail)?;
        let last = run + 1 == steps.len();
        let outcome = if last {
            Outcome::Commit
        } else {
            outcomes[run % outcomes.len()].clone()
        };
        let delivered = |key: &str| match outcome {
            Outcome::Commit => true,
            Outcome::Killed { unfinished, seed } => {
                let range = owner(xxhash_rust::xxh3::xxh3_128(key.as_bytes()), workers);
                let finished = unfinished & (1 << range) == 0;
                let picked = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed) % 2 == 0;
                finished && picked
            }
        };
        for (key, op) in emitted(&sets) {
            if !delivered(&key) {
                continue;
            }
            match op {
                ChangeOp::Delete => {
                    destination.remove(&key);
                }
                _ => {
                    let row = table[&key.parse::<i64>().unwrap()].clone();
                    destination.insert(key, row);
                }
            }
        }
        match outcome {
            Outcome::Commit => {
                previous = counts.parts.lock().unwrap().clone();
                pending_dirs.clear();
                let want: BTreeMap<String, Row> = table
                    .iter()
                    .map(|(k, r)| (k.to_string(), r.clone()))
                    .collect();
                prop_assert_eq!(&destination, &want, "after committed run {}", run);
            }
            Outcome::Killed { unfinished, .. } => {
                for range in (0..workers).filter(|r| unfinished & (1 << r) != 0) {
                    std::fs::remove_file(next_dir.join(sorted_part_name(range, workers))).unwrap();
                }
                pending_dirs.push(next_dir);
            }
        }
    }
    Ok(())
}

/// Runs `steps`, run `r` with `workers[r % workers.len()]` workers (the state of a run with
/// one worker count is read by a run with another).
fn run(steps: &[Vec<Step>], workers: &[usize], chunk: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut table: BTreeMap<i64, Row> = BTreeMap::new();
    let mut with_c = false;
    let mut previous: Vec<PathBuf> = Vec::new();
    for (run, batch_steps) in steps.iter().enumerate() {
        let before = table.clone();
        apply(&mut table, &mut with_c, batch_steps);
        let input = batches(&table, with_c, chunk);
        let hasher = hasher_for(&input, with_c);
        let next_dir = dir.path().join(format!("run-{run}"));
        let workers = workers[run % workers.len()];
        let spec = DiffSpec {
            hasher: Arc::new(hasher),
            previous: previous.clone(),
            pending: Vec::new(),
            next_dir,
            spill_dir: dir.path().join("spill"),
            // A tiny budget so the spill path is exercised too.
            memory_budget: if run % 2 == 0 { 1 } else { 1 << 30 },
            emit: Emit::Changes,
            send_deletes: true,
        };
        let (sets, counts) = diff_batches(workers, input, spec).map_err(TestCaseError::fail)?;
        let want = oracle(&before, &table);
        let got = emitted(&sets);
        prop_assert_eq!(&got, &want, "run {} with {} workers", run, workers);
        let parts = counts.parts.lock().unwrap().clone();
        // Per worker: a sorted part and a key-text part.
        prop_assert_eq!(parts.len(), 2 * workers);
        previous = parts;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn killed_runs_are_corrected_by_the_next_committed_run(
        steps in proptest::collection::vec(proptest::collection::vec(step(), 0..25), 2..8),
        outcomes in proptest::collection::vec(outcome(), 1..5),
    ) {
        for workers in [&[1][..], &[2], &[1, 2, 4], &[4, 2]] {
            run_with_failures(&steps, &outcomes, workers)?;
        }
    }

    #[test]
    fn diff_matches_oracle(
        steps in proptest::collection::vec(proptest::collection::vec(step(), 0..25), 1..6),
        chunk in 1usize..9,
    ) {
        for workers in [&[1][..], &[2], &[4], &[1, 2, 4], &[4, 1, 2]] {
            run(&steps, workers, chunk)?;
        }
    }
}

/// Duplicate keys in one snapshot fail the run and name examples.
#[test]
fn duplicate_keys_are_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 7, 7])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 3])),
        ],
    )
    .unwrap();
    for workers in [1, 2] {
        let spec = DiffSpec {
            hasher: Arc::new(RowHasher::new(&schema, &["id".to_string()], &[], &[]).unwrap()),
            previous: Vec::new(),
            pending: Vec::new(),
            next_dir: dir.path().join(format!("w{workers}")),
            spill_dir: dir.path().join("spill"),
            memory_budget: 1 << 20,
            emit: Emit::Changes,
            send_deletes: true,
        };
        let err = diff_batches(workers, vec![batch.clone()], spec).unwrap_err();
        assert!(
            err.contains("duplicate primary key values, e.g. 7"),
            "{err}"
        );
    }
}

/// Fingerprints ignore JSON key order and NULL columns, and see every real change.
#[test]
fn fingerprint_rules() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("props", DataType::Utf8, true),
        Field::new("extra", DataType::Int64, true),
    ]));
    let narrow = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("props", DataType::Utf8, true),
    ]));
    let key = ["id".to_string()];
    let json = ["props".to_string()];
    let wide = RowHasher::new(&schema, &key, &[], &json).unwrap();
    let small = RowHasher::new(&narrow, &key, &[], &json).unwrap();
    let fp = |h: &RowHasher, s: &Arc<Schema>, props: &str, extra: Option<i64>| {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec![props])),
        ];
        if s.fields().len() == 3 {
            cols.push(Arc::new(Int64Array::from(vec![extra])));
        }
        h.hash_batch(&RecordBatch::try_new(s.clone(), cols).unwrap())
            .ids[0]
            .unwrap()
    };
    let a = fp(&small, &narrow, r#"{"x":1,"y":[1,2]}"#, None);
    // Key order and whitespace in a JSON column do not matter.
    assert_eq!(a, fp(&small, &narrow, r#"{ "y": [1, 2], "x": 1 }"#, None));
    // An added nullable column changes nothing while it is NULL…
    assert_eq!(a, fp(&wide, &schema, r#"{"x":1,"y":[1,2]}"#, None));
    // …and does once it has a value.
    assert_ne!(a.fp, fp(&wide, &schema, r#"{"x":1,"y":[1,2]}"#, Some(0)).fp);
    assert_ne!(a.fp, fp(&small, &narrow, r#"{"x":2,"y":[1,2]}"#, None).fp);
    assert_eq!(a.key, fp(&small, &narrow, "{}", None).key);
}

/// A state committed by an older wharf (unsorted `WHSNAP01` parts holding pairs and key texts)
/// is diffed against, not resent: only the real changes come out, and the new state is sorted.
#[test]
fn legacy_state_is_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let before: BTreeMap<i64, Row> = (0..50)
        .map(|k| (k, (Some(k % 4), Some(format!("v{k}")), None)))
        .collect();
    let input = batches(&before, false, 7);
    let hasher =
        Arc::new(RowHasher::new(&input[0].schema(), &["id".to_string()], &[], &[]).unwrap());
    // Two legacy parts, rows in table order (not by key hash).
    let mut previous = Vec::new();
    for (n, part) in input.chunks(4).enumerate() {
        let path = dir.path().join(format!("legacy-{n}.snap"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"WHSNAP01").unwrap();
        for b in part {
            let hashed = hasher
                .with_fingerprint(FingerprintVersion::Text)
                .hash_batch(b);
            for (i, id) in hashed.ids.iter().enumerate() {
                let id = id.unwrap();
                f.write_all(&id.key.to_le_bytes()).unwrap();
                f.write_all(&id.fp.to_le_bytes()).unwrap();
                let key = hashed.key(i);
                f.write_all(&[key.len() as u8]).unwrap();
                f.write_all(key).unwrap();
            }
        }
        previous.push(path);
    }
    let mut after = before.clone();
    after.remove(&3);
    after.insert(7, (Some(9), None, None));
    after.insert(100, (None, None, None));
    let spec = |previous: Vec<PathBuf>, next: String| DiffSpec {
        hasher: hasher.clone(),
        previous,
        pending: Vec::new(),
        next_dir: dir.path().join(next),
        spill_dir: dir.path().join("spill"),
        memory_budget: 1 << 20,
        emit: Emit::Changes,
        send_deletes: true,
    };
    for workers in [1, 2] {
        let first = spec(previous.clone(), format!("next-{workers}"));
        let (sets, counts) = diff_batches(workers, batches(&after, false, 5), first).unwrap();
        assert_eq!(emitted(&sets), oracle(&before, &after));
        // The state keeps its (text) fingerprints, so the next run finds nothing changed.
        let parts = counts.parts.lock().unwrap().clone();
        let again = spec(parts, format!("again-{workers}"));
        let (sets, _) = diff_batches(workers, batches(&after, false, 5), again).unwrap();
        assert!(emitted(&sets).is_empty());
    }
}

/// Version 2 (binary) fingerprints: integer widths do not matter, NaN counts as NULL, and the
/// two versions differ (which is why a state keeps the version it was written with).
#[test]
fn binary_fingerprints() {
    use wharf_operators::arrow::array::{Float64Array, Int32Array};
    let key = ["id".to_string()];
    let fp = |value: ArrayRef, version: FingerprintVersion| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", value.data_type().clone(), true),
        ]));
        let hasher = RowHasher::new(&schema, &key, &[], &[])
            .unwrap()
            .with_fingerprint(version);
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1])), value]).unwrap();
        hasher.hash_batch(&batch).ids[0].unwrap().fp
    };
    let bin = FingerprintVersion::Binary;
    let i64v = fp(Arc::new(Int64Array::from(vec![7])), bin);
    assert_eq!(i64v, fp(Arc::new(Int32Array::from(vec![7])), bin));
    assert_ne!(i64v, fp(Arc::new(Int64Array::from(vec![8])), bin));
    assert_ne!(i64v, fp(Arc::new(StringArray::from(vec!["7"])), bin));
    let null = fp(Arc::new(Int64Array::from(vec![None::<i64>])), bin);
    assert_eq!(null, fp(Arc::new(Float64Array::from(vec![f64::NAN])), bin));
    assert_ne!(null, fp(Arc::new(Float64Array::from(vec![0.5])), bin));
    assert_ne!(
        i64v,
        fp(
            Arc::new(Int64Array::from(vec![7])),
            FingerprintVersion::Text
        )
    );
}
