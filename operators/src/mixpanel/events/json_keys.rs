//! The order a JSON column's keys are written in, kept from one row to the next.
//!
//! A row's keys are written sorted by name, a repeated key's last value kept, and a key that
//! names a table column or a reserved property skipped. The rows of one column mostly carry
//! the same keys in the same order, so that order and those skips are worked out once and
//! reused for as long as the names are the previous row's: checked 16 bytes at a time, read
//! from the column's values buffer, with no sort, hash or string comparison.

use crate::encode::window_16;

/// The write order of the last row's keys, and their names to recognise the next row's by.
#[derive(Debug, Default)]
pub(super) struct KeyOrder {
    /// The names, in the row's order, as their bytes zero-padded to 16 and their length.
    names: Vec<(u128, usize)>,
    /// Whether `names` holds every name: none was longer than 16 bytes or outside the buffer.
    known: bool,
    /// Indexes of the members to write, in the order to write them.
    order: Vec<usize>,
    scratch: Vec<usize>,
}

impl KeyOrder {
    /// Which of `members` (name, value text) to write, in order: sorted by name, the last of
    /// a repeated name, none for which `taken` holds. The names are slices of `data`.
    pub(super) fn order(
        &mut self,
        members: &[(&str, &str)],
        data: &[u8],
        taken: impl Fn(&str) -> bool,
    ) -> &[usize] {
        if !(self.known && self.same_names(members, data)) {
            self.rebuild(members, data, taken);
        }
        &self.order
    }

    fn same_names(&self, members: &[(&str, &str)], data: &[u8]) -> bool {
        self.names.len() == members.len()
            && members
                .iter()
                .zip(&self.names)
                .all(|((name, _), &(bytes, len))| {
                    name.len() == len && padded(data, name) == Some(bytes)
                })
    }

    fn rebuild(&mut self, members: &[(&str, &str)], data: &[u8], taken: impl Fn(&str) -> bool) {
        let sorted = &mut self.scratch;
        sorted.clear();
        sorted.extend(0..members.len());
        // Stable: a repeated name's members stay in their order, the last one kept.
        sorted.sort_by(|&a, &b| members[a].0.cmp(members[b].0));
        self.order.clear();
        for (n, &i) in sorted.iter().enumerate() {
            let name = members[i].0;
            let repeated = sorted.get(n + 1).is_some_and(|&j| members[j].0 == name);
            if !repeated && !taken(name) {
                self.order.push(i);
            }
        }
        self.names.clear();
        self.known = true;
        for (name, _) in members {
            match padded(data, name) {
                Some(bytes) => self.names.push((bytes, name.len())),
                None => {
                    self.known = false;
                    break;
                }
            }
        }
    }
}

/// `name`'s bytes zero-padded to 16, read from `data`, when it is that short and lies in it.
fn padded(data: &[u8], name: &str) -> Option<u128> {
    let window = u128::from_le_bytes(*window_16(data, name.as_bytes())?);
    Some(match name.len() {
        16 => window,
        len => window & ((1u128 << (len * 8)) - 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order and skips computed from scratch for every row.
    fn fresh(members: &[(&str, &str)], taken: &[&str]) -> Vec<usize> {
        let mut order = KeyOrder::default();
        order.order(members, &[], |k| taken.contains(&k)).to_vec()
    }

    proptest::proptest! {
        /// Rows of names drawn from a few (some repeated in a row, some taken, some longer
        /// than 16 bytes), one after another through one `KeyOrder`: each row's order is the
        /// one computed afresh.
        #[test]
        fn reused_orders_are_fresh_ones(
            rows in proptest::collection::vec(
                proptest::collection::vec(0usize..6, 0..6),
                1..30,
            ),
        ) {
            let pool = ["b", "a", "time", "ab", "a_name_longer_than_16", "b\u{e9}"];
            let taken = ["time"];
            // One buffer holding every row's names, as a column's values buffer does.
            let mut text = String::new();
            let mut spans = Vec::new();
            for row in &rows {
                let mut names = Vec::new();
                for &p in row {
                    names.push((text.len(), pool[p].len()));
                    text.push_str(pool[p]);
                }
                spans.push(names);
            }
            let data = text.as_bytes();
            let mut order = KeyOrder::default();
            for names in &spans {
                let members: Vec<(&str, &str)> = names
                    .iter()
                    .map(|&(at, len)| (&text[at..at + len], "1"))
                    .collect();
                let got = order.order(&members, data, |k| taken.contains(&k)).to_vec();
                proptest::prop_assert_eq!(got, fresh(&members, &taken));
            }
        }
    }
}
