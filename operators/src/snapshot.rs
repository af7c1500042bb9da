//! Row identity for snapshot diffs: a key hash, a 128-bit fingerprint of the row's values,
//! and the compact files in which a committed snapshot's `(key, fingerprint)` state is kept.
//!
//! # Fingerprint
//! The fingerprint is `xxh3_128` over a canonical encoding of the row's non-key columns:
//! columns are taken in the order of their names (so reordering columns changes nothing), and
//! every non-NULL value is hashed as `name 0x00 value`. NULL values — and values without a JSON
//! form, NaN and ±infinity — are left out entirely, so adding a nullable column changes no
//! fingerprint, wherever it is added. Columns named as JSON columns are canonicalized first:
//! parsed and re-written with object keys sorted and no whitespace, so key order and
//! formatting do not matter (text that is not valid JSON is hashed as it is).
//!
//! `value` has two versions ([`FingerprintVersion`]). Version 2 (binary, the default): a tag
//! byte and the value's bytes — integers of any width as `i` + i64 little-endian (`u` + u64
//! above i64's range), floats as `f` + the f64's bits, strings as `s` + u64 length + UTF-8,
//! booleans as `b` + 0/1, JSON columns as `j` + length + canonical JSON, every other type as
//! `t` + length + its JSON text. Version 1 (text; states committed by older versions): the
//! value's JSON text followed by `0x1e`. A sync keeps the version its committed state was
//! written with (the state files say which), so an upgrade resends nothing; `wharf reset`
//! starts it over on version 2.
//!
//! For events (identity columns configured), the upper 64 bits of the fingerprint are a hash of
//! the identity columns (event name, distinct id, time) and the lower 64 bits a hash of the
//! rest: an update that changes an event's identity can then be told apart from one that does
//! not, without keeping the old row.
//!
//! # Key
//! The key of a row is the JSON text of its primary-key value (a JSON array for composite
//! keys); the key hash is `xxh3_128` of that text. A row with a NULL key column has no key.

mod canonical;
mod format;
mod keys;
mod pending;
mod reader;
mod row_id;
mod writer;

pub use canonical::canonical_json;
pub use format::{part_kind, sorted_part_name, state_fingerprint_version, PartKind};
pub use keys::{owner, KeyHasher, KeyHashing, KeyMap, KeySet};
pub use pending::PendingSnapshot;
pub use reader::{key_texts_of, KeyTextReader, PreviousRange, SortedRangeReader};
pub use row_id::{identity_changed, FingerprintVersion, HashedBatch, RowHasher, RowId};
pub use writer::{KeyTextWriter, SortedPartWriter};
