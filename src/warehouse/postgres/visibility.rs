//! Which transactions a snapshot of a captured table saw ([`SnapshotVisibility`]), and LSNs
//! as PostgreSQL writes them.

use serde::{Deserialize, Serialize};

/// Which transactions the first snapshot of a captured table saw: its MVCC snapshot, and
/// the WAL insert position taken right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotVisibility {
    /// Every transaction id below it had finished (`pg_current_snapshot()`'s xmin).
    pub xmin: u64,
    /// No transaction id from it on had finished (its xmax).
    pub xmax: u64,
    /// Transaction ids between the two that were still running.
    pub xip: Vec<u64>,
    /// The WAL insert position just after the snapshot was taken: a transaction committed at
    /// or past it is not in the snapshot.
    pub lsn: u64,
}

impl SnapshotVisibility {
    /// Parses `pg_current_snapshot()::text` (`xmin:xmax:xip,xip…`) and the insert position.
    pub fn parse(snapshot: &str, lsn: &str) -> Option<SnapshotVisibility> {
        let mut it = snapshot.split(':');
        let xmin = it.next()?.parse().ok()?;
        let xmax = it.next()?.parse().ok()?;
        let xip = match it.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(SnapshotVisibility {
            xmin,
            xmax,
            xip,
            lsn: parse_lsn(lsn)?,
        })
    }

    /// Whether the snapshot saw the transaction `xid` (32-bit, as the change stream carries
    /// it) that committed at `commit_lsn`. Ids compare as PostgreSQL compares them: modulo
    /// 2^32, within 2^31 of each other (true for transactions streamed after the snapshot).
    pub fn sees(&self, xid: u32, commit_lsn: u64) -> bool {
        if commit_lsn >= self.lsn {
            return false;
        }
        let precedes = |a: u32, b: u32| (a.wrapping_sub(b) as i32) < 0;
        precedes(xid, self.xmax as u32) && !self.xip.iter().any(|&x| x as u32 == xid)
    }
}

/// Parses `X/Y` (hex halves).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats an LSN as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_transactions_finished_before_it_only() {
        let v = SnapshotVisibility::parse("100:105:101,103", "0/5000").unwrap();
        assert_eq!(
            (v.xmin, v.xmax, v.xip.clone(), v.lsn),
            (100, 105, vec![101, 103], 0x5000)
        );
        assert!(v.sees(99, 0x4000), "finished before xmin");
        assert!(v.sees(102, 0x4000), "finished between, not in progress");
        assert!(!v.sees(101, 0x4000), "in progress at the snapshot");
        assert!(!v.sees(105, 0x4000), "started after it");
        assert!(
            !v.sees(99, 0x5000),
            "committed at or after its insert position"
        );
        let none = SnapshotVisibility::parse("7:7:", "1/0").unwrap();
        assert!(none.xip.is_empty() && none.sees(6, 0) && !none.sees(7, 0));
        // Ids wrap at 2^32: a 64-bit snapshot compares with 32-bit stream ids.
        let wrapped = SnapshotVisibility::parse("4294967290:4294967300:", "0/10").unwrap();
        assert!(wrapped.sees(4294967295, 1) && wrapped.sees(2, 1) && !wrapped.sees(4, 1));
        assert!(SnapshotVisibility::parse("nope", "0/1").is_none());
    }

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }
}
