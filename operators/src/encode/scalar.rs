//! Scalars as JSON text: integers, floats, decimals, dates and timestamps.

use arrow::datatypes::TimeUnit;

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Two decimal digits of `v` (below 100).
fn digits_2(v: u32) -> [u8; 2] {
    [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
}

/// Writes `YYYY-MM-DD` of `days`: the cached text when it is the cached day, else computed
/// once (and cached, for years 0–9999; ISO-8601 writes others with a sign, `itoa`'s here).
fn push_date(out: &mut Vec<u8>, days: i64, cache: &DateCache) {
    let (last, text) = cache.0.get();
    if last == days {
        out.extend_from_slice(&text);
        return;
    }
    let (y, m, d) = civil_from_days(days);
    let [m1, m2] = digits_2(m);
    let [d1, d2] = digits_2(d);
    if (0..=9999).contains(&y) {
        // One copy of the whole date, not ten pushes.
        let y = y as u32;
        let [y1, y2] = digits_2(y / 100);
        let [y3, y4] = digits_2(y % 100);
        let text = [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2];
        cache.0.set((days, text));
        out.extend_from_slice(&text);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
        out.extend_from_slice(&[b'-', m1, m2, b'-', d1, d2]);
    }
}

/// The last day a column wrote and its `YYYY-MM-DD`: rows of a batch often fall on the same
/// day (an event time, an insert time), and then the date is one copy, not a calendar
/// computation.
#[derive(Debug)]
pub struct DateCache(std::cell::Cell<(i64, [u8; 10])>);

impl Default for DateCache {
    fn default() -> Self {
        // No day written is i64::MIN (its year is far outside 0–9999, never cached).
        DateCache(std::cell::Cell::new((i64::MIN, [0; 10])))
    }
}

/// Writes microseconds since the epoch as a quoted ISO-8601 UTC string.
pub fn write_iso_micros(out: &mut Vec<u8>, micros: i64) {
    write_iso_micros_cached(out, micros, &DateCache::default());
}

/// [`write_iso_micros`], with the date part from `cache` when it is the cached day.
#[inline]
pub fn write_iso_micros_cached(out: &mut Vec<u8>, micros: i64, cache: &DateCache) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    out.push(b'"');
    push_date(out, days, cache);
    let [h1, h2] = digits_2(sod / 3600);
    let [n1, n2] = digits_2((sod / 60) % 60);
    let [s1, s2] = digits_2(sod % 60);
    out.extend_from_slice(&[b'T', h1, h2, b':', n1, n2, b':', s1, s2]);
    if frac != 0 {
        if frac % 1000 == 0 {
            let ms = frac / 1000;
            let [m2, m3] = digits_2(ms % 100);
            out.extend_from_slice(&[b'.', b'0' + (ms / 100) as u8, m2, m3]);
        } else {
            let [a, b] = digits_2(frac / 10_000);
            let [c, d] = digits_2(frac / 100 % 100);
            let [e, f] = digits_2(frac % 100);
            out.extend_from_slice(&[b'.', a, b, c, d, e, f]);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// Writes days since the epoch as a quoted `YYYY-MM-DD` string.
pub fn write_iso_date(out: &mut Vec<u8>, days: i64) {
    write_iso_date_cached(out, days, &DateCache::default());
}

/// [`write_iso_date`], from `cache` when it is the cached day.
#[inline]
pub fn write_iso_date_cached(out: &mut Vec<u8>, days: i64, cache: &DateCache) {
    out.push(b'"');
    push_date(out, days, cache);
    out.push(b'"');
}

/// Converts a value of a timestamp in `unit` to microseconds (saturating).
pub fn to_micros(v: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1_000),
    }
}

pub(super) fn write_decimal(out: &mut Vec<u8>, v: i128, scale: i8) {
    let mut buf = itoa::Buffer::new();
    if scale <= 0 {
        out.extend_from_slice(buf.format(v).as_bytes());
        // Zero stays `0`: `000` is not a JSON number.
        if v != 0 {
            out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let magnitude = v.unsigned_abs();
    let digits = match u64::try_from(magnitude) {
        Ok(small) => buf.format(small),
        Err(_) => buf.format(magnitude),
    }
    .as_bytes();
    let scale = scale as usize;
    if v < 0 {
        out.push(b'-');
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

#[inline]
pub(super) fn write_f64(out: &mut Vec<u8>, v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    if !write_short_decimal(out, v) {
        // ryu keeps a `.0` on whole floats, so a float column stays a float downstream.
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
    true
}

/// Writes `v` as ryu does (its shortest round-trip digits, `.0` on whole numbers) when it is a
/// decimal of at most 4 places between 0.0001 and 10^11 (prices, durations, rates), without
/// ryu's search; false, writing nothing, for every other value.
///
/// Why this is ryu's text: `n / 10^4`, with `n` an integer, is the exact decimal of `v` when
/// the double nearest to it is `v` (IEEE division of two exact integers rounds correctly, as
/// parsing does). Below 10^11 doubles lie less than 10^-4 apart, so no other decimal of at
/// most 4 places reads back as `v`, and no shorter one can either: this one is the shortest.
#[inline]
fn write_short_decimal(out: &mut Vec<u8>, v: f64) -> bool {
    let a = v.abs();
    if !(1e-4..1e11).contains(&a) {
        return false;
    }
    let n = (a * 10_000.0 + 0.5) as u64;
    if n as f64 / 10_000.0 != a {
        return false;
    }
    let (int, mut frac) = (n / 10_000, (n % 10_000) as u32);
    if v < 0.0 {
        out.push(b'-');
    }
    out.extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
    // At least one fractional digit, as ryu writes `3.0`; no trailing zeros.
    let mut places = 4;
    while places > 1 && frac % 10 == 0 {
        frac /= 10;
        places -= 1;
    }
    let [a, b] = digits_2(frac / 100);
    let [c, d] = digits_2(frac % 100);
    out.push(b'.');
    out.extend_from_slice(&[a, b, c, d][4 - places..]);
    true
}

pub(super) fn write_int<T: itoa::Integer>(out: &mut Vec<u8>, v: T) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ryu_text(v: f64) -> Vec<u8> {
        ryu::Buffer::new().format_finite(v).as_bytes().to_vec()
    }

    fn written(v: f64) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(write_f64(&mut out, v));
        out
    }

    #[test]
    fn short_decimals_at_the_edges_are_ryus_text() {
        for v in [
            0.0001,
            0.0009,
            0.001,
            0.01,
            0.1,
            0.5,
            1.0,
            3.0,
            2046.58,
            99_999_999_999.999_9,
            99_999_999_999.999,
            1e10,
            12.3456,
            0.00015,
            1e11,
            1e-5,
            0.0,
            -0.0,
            5e-324,
            f64::MAX,
            1.7976931348623157e308,
            0.30000000000000004,
            100.0,
            1234.5,
        ] {
            for v in [v, -v] {
                assert_eq!(written(v), ryu_text(v), "{v:e}");
            }
        }
        // The fast path is taken where it should be, and only there.
        for (v, short) in [(2046.58, true), (-0.0001, true), (0.1, true), (1e-5, false)] {
            assert_eq!(write_short_decimal(&mut Vec::new(), v), short, "{v}");
        }
        for v in [0.0, 1e11, 0.30000000000000004, 1.0 / 3.0] {
            assert!(!write_short_decimal(&mut Vec::new(), v), "{v}");
        }
    }

    proptest::proptest! {
        #[test]
        fn floats_are_ryus_text(
            n in -(1i64 << 53)..(1i64 << 53),
            small in -10_000_000i64..10_000_000,
            places in 0u32..8,
            bits: u64,
        ) {
            // Decimals of every size, and many around the fast path's range (up to 1,000).
            for n in [n, small, n % 1_000_000_000_000_000] {
                let decimal = n as f64 / 10f64.powi(places as i32);
                proptest::prop_assert_eq!(written(decimal), ryu_text(decimal));
            }
            let any = f64::from_bits(bits);
            if any.is_finite() {
                proptest::prop_assert_eq!(written(any), ryu_text(any));
            }
        }

        #[test]
        fn cached_dates_are_the_computed_ones(
            days in proptest::collection::vec(-800_000i64..3_000_000, 1..40),
        ) {
            let cache = DateCache::default();
            for (n, &d) in days.iter().enumerate() {
                // Repeat each day once, so that both the cached and the computed path run.
                for micros in [d * 86_400_000_000 + n as i64, d * 86_400_000_000 + 7] {
                    let (mut cached, mut plain) = (Vec::new(), Vec::new());
                    write_iso_micros_cached(&mut cached, micros, &cache);
                    write_iso_micros(&mut plain, micros);
                    proptest::prop_assert_eq!(&cached, &plain);
                    cached.clear();
                    plain.clear();
                    write_iso_date_cached(&mut cached, d, &cache);
                    write_iso_date(&mut plain, d);
                    proptest::prop_assert_eq!(cached, plain);
                }
            }
        }
    }
}
