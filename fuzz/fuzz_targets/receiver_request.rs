//! The Mixpanel test receiver's request parsing: `/import` (JSON, NDJSON, form; gzip; auth;
//! the per-event rules, fast path and `Value` path), `/engage` and `/groups` (profile updates,
//! applied in memory), lookup table CSV bodies, and gzip itself (ISA-L against zlib-rs).
//!
//! Input: `[endpoint][content type][flags]`, then the query string up to the first `\n`,
//! then the body.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 8] = [
    "application/json",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "text/csv",
    "Application/JSON; charset=utf-8",
    "",
    "text/plain",
    "application/x-ndjson ; x=y",
];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let [endpoint, content_type, flags, rest @ ..] = data else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let query = String::from_utf8_lossy(query);
    match endpoint % 6 {
        0..=3 => {
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            let ct = CONTENT_TYPES[usize::from(content_type % 8)];
            if !ct.is_empty() {
                headers.push(("content-type", ct.as_bytes()));
            }
            // Basic base64("user:secret"), a malformed one, or none.
            match flags & 3 {
                0 | 1 => headers.push(("authorization", b"Basic dXNlcjpzZWNyZXQ=")),
                2 => headers.push(("authorization", b"Basic !!notbase64")),
                _ => {}
            }
            let body = if flags & 4 != 0 {
                headers.push(("content-encoding", b"gzip"));
                gzip(body)
            } else {
                match (flags >> 3) & 3 {
                    // Raw bytes declared gzip: the inflaters on arbitrary input.
                    1 => headers.push(("content-encoding", b"x-gzip")),
                    2 => headers.push(("content-encoding", b" Identity ")),
                    3 => headers.push(("content-encoding", b"br")),
                    _ => {}
                }
                body.to_vec()
            };
            let headers = wharf::fuzzing::headers(headers);
            match endpoint % 6 {
                0 => wharf::fuzzing::receiver_import(&query, &headers, body),
                1 => wharf::fuzzing::receiver_profiles(false, &query, &headers, body),
                2 => wharf::fuzzing::receiver_profiles(true, &query, &headers, body),
                _ => wharf::fuzzing::receiver_lookup(&query, &headers, body),
            }
        }
        4 => {
            // wharf's CSV writer (lookup tables) read back by the receiver's CSV reader:
            // fields split at 0x1f, rows at 0x1e, written with `\r\n` after each row.
            let text = String::from_utf8_lossy(body);
            let rows: Vec<Vec<&str>> = text
                .split('\u{1e}')
                .map(|row| row.split('\u{1f}').collect())
                .collect();
            let mut csv = Vec::new();
            for row in &rows {
                for (i, field) in row.iter().enumerate() {
                    if i > 0 {
                        csv.push(b',');
                    }
                    wharf_operators::mixpanel::changes::write_csv_field(&mut csv, field);
                }
                csv.extend_from_slice(b"\r\n");
            }
            let csv = String::from_utf8(csv).expect("CSV of UTF-8 fields is UTF-8");
            let read = wharf::fuzzing::lookup_csv(&csv).expect("wharf's CSV reads back");
            // A row of one empty field is an empty line, which CSV cannot tell from none.
            if rows.iter().all(|r| r.len() > 1 || !r[0].is_empty()) {
                let want: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| r.iter().map(|f| f.to_string()).collect())
                    .collect();
                assert_eq!(read, want, "{csv:?}");
            }
            let _ = wharf::fuzzing::lookup_csv(&text);
        }
        _ => {
            // gzip: arbitrary bytes inflated (ISA-L checked against zlib-rs), and wharf's own
            // gzip of them inflated back.
            let _ = wharf::fuzzing::gunzip(body, 1 << 20);
            let packed = wharf::destination::gzip::gzip(body).expect("gzip into memory");
            let back = wharf::fuzzing::gunzip(&packed, body.len());
            assert_eq!(back.as_deref(), Some(body));
        }
    }
});
