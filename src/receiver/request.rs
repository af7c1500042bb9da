//! Reading a request: content decoding, body shapes (JSON, NDJSON, form), HTTP Basic auth
//! and query/form parameters.

use super::gzip::{gunzip, Inflate};
use super::*;

pub(super) fn content_type(headers: &HeaderMap) -> String {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mime = value.unwrap_or("").split(';').next().unwrap_or("");
    mime.trim().to_ascii_lowercase()
}

/// Undoes `Content-Encoding: gzip`, refusing to inflate past `limit` bytes.
pub(super) fn decode_content(
    headers: &HeaderMap,
    body: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, Reply> {
    decode_content_keeping(headers, body, limit).map(|(body, _)| body)
}

/// [`decode_content`], also handing back a gzip body as it came (it checked out as gzip).
pub(super) fn decode_content_keeping(
    headers: &HeaderMap,
    body: Vec<u8>,
    limit: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>), Reply> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok((body, None)),
        Some("gzip" | "x-gzip") => match gunzip(&body, limit) {
            Ok(out) => Ok((out, Some(body))),
            Err(Inflate::TooLarge) => Err(Reply::too_large()),
            Err(Inflate::Invalid(e)) => {
                Err(Reply::bad_request(format!("body is not valid gzip: {e}")))
            }
        },
        Some(other) => Err(Reply::bad_request(format!(
            "unsupported Content-Encoding {other:?}"
        ))),
    }
}

pub(super) fn json_records(body: &[u8]) -> Result<Vec<Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(records)) => Ok(records),
        Ok(record @ Value::Object(_)) => Ok(vec![record]),
        Ok(_) => Err("body must be a JSON array of records or one record object".into()),
        Err(e) => Err(format!("body is not valid JSON: {e}")),
    }
}

/// The records of an `/import` body as the client sent them: each record's JSON text, kept so
/// that an accepted event is stored as sent rather than parsed and written out again (which
/// cost a fifth of the receiver's time). Borrowed from the body where it can be.
pub(super) struct Records<'a> {
    pub(super) texts: Vec<Cow<'a, str>>,
    /// NDJSON: each record's line number. Those texts are split at newlines but not yet known
    /// to be JSON (each is read once, by the validation); the others already parsed as JSON.
    pub(super) lines: Option<Vec<usize>>,
}

impl Records<'_> {
    pub(super) fn len(&self) -> usize {
        self.texts.len()
    }
}

/// A JSON body (an array of records, or one record), each record's text borrowed.
pub(super) fn raw_json_records(body: &[u8]) -> Result<Records<'_>, String> {
    use serde_json::value::RawValue;
    let invalid = |e: serde_json::Error| format!("body is not valid JSON: {e}");
    let texts: Vec<&RawValue> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(invalid)?,
        Some(b'{') => vec![serde_json::from_slice(body).map_err(invalid)?],
        _ => {
            return match serde_json::from_slice::<Value>(body) {
                Ok(_) => Err("body must be a JSON array of records or one record object".into()),
                Err(e) => Err(invalid(e)),
            }
        }
    };
    Ok(Records {
        texts: texts.into_iter().map(|r| Cow::Borrowed(r.get())).collect(),
        lines: None,
    })
}

/// [`raw_json_records`] for a body that must outlive its source (a form's `data`).
pub(super) fn owned_json_records(body: &[u8]) -> Result<Records<'static>, String> {
    let records = raw_json_records(body)?;
    Ok(Records {
        texts: records
            .texts
            .into_iter()
            .map(|t| Cow::Owned(t.into_owned()))
            .collect(),
        lines: None,
    })
}

/// An NDJSON body's records (blank lines skipped), each line borrowed. A JSON text has no raw
/// newline, so splitting at newlines finds every record; whether each line is JSON is left
/// to the validation, which reads it anyway (see [`Records::lines`]).
pub(super) fn ndjson_records(body: &[u8]) -> Result<Records<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "NDJSON body is not UTF-8".to_string())?;
    let (mut texts, mut lines) = (Vec::new(), Vec::new());
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    for (i, end) in ends.enumerate() {
        // `\n` is ASCII: `start..end` are character boundaries.
        let line = text[start..end].trim_ascii();
        start = end + 1;
        if !line.is_empty() {
            texts.push(Cow::Borrowed(line));
            lines.push(i + 1);
        }
    }
    Ok(Records {
        texts,
        lines: Some(lines),
    })
}

/// The `data` field of a form body: JSON, or base64 of JSON (older client libraries), read
/// with `records` (e.g. [`json_records`]).
pub(super) fn form_records<T>(
    data: Option<&str>,
    records: fn(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    let data = data.ok_or_else(|| "form body has no data field".to_string())?;
    records(data.as_bytes()).or_else(|err| {
        let decoded = base64::engine::general_purpose::STANDARD.decode(data.trim());
        decoded.ok().and_then(|d| records(&d).ok()).ok_or(err)
    })
}

/// Credentials from an `Authorization: Basic` header.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
    Some((user.to_string(), pass.to_string()))
}

pub(super) fn authorized(
    auth: &ReceiverAuth,
    headers: &HeaderMap,
    project_id: Option<&str>,
) -> bool {
    let Some((user, pass)) = basic_credentials(headers) else {
        return false;
    };
    match auth {
        ReceiverAuth::AnyCredentials => !user.is_empty(),
        ReceiverAuth::ServiceAccount {
            username,
            secret,
            project_id: expected,
        } => {
            let project_ok = project_id.is_some_and(|p| constant_time_eq(p, expected));
            constant_time_eq(&user, username) & constant_time_eq(&pass, secret) & project_ok
        }
        ReceiverAuth::ProjectToken { token } => constant_time_eq(&user, token) & pass.is_empty(),
    }
}

pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses `a=1&b=2` (query strings and form bodies).
pub(super) fn parse_pairs(input: &str) -> Result<Vec<(String, String)>, String> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
pub(super) fn percent_decode(input: &str) -> Result<String, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex);
                let low = bytes.get(i + 2).copied().and_then(hex);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err("invalid percent-encoding".into());
                };
                out.push(high << 4 | low);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "percent-encoded data is not UTF-8".into())
}
