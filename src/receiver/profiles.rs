//! `POST /engage` (user profiles) and `POST /groups` (group profiles), after Mixpanel's
//! ingestion reference (`openapi/ingestion.openapi.yaml`, `reference/user-profile-limits`,
//! `reference/limits-1`).
//!
//! A body is a JSON array of updates (`application/json`), or a form with `data=<json>`
//! (plain or base64) as the official client libraries send. Each update carries `$token`,
//! `$distinct_id` (or `$group_key` + `$group_id`) and exactly one operation; at most 2000
//! updates per request and 1 MB per update. Mixpanel answers 200 even when updates fail, so
//! the body tells (the documented shapes, and what this receiver chose where the docs say
//! nothing):
//! - plain: `1` when some update was applied, `0` when none was (documented).
//! - `verbose=1`: `{"status":1,"error":null}`, or `{"status":0,"error":"<reason>"}` when
//!   nothing was applied (documented).
//! - `strict=1`: the docs promise "a JSON object with per-record error messages" without
//!   giving its shape; this receiver answers like `/import`'s strict mode:
//!   `{"status":0,"error":"some data points in the request failed validation",
//!   "failed_records":[{"index":0,"$distinct_id":"…","field":"$set","message":"…"}],
//!   "num_records_imported":N}` (with `$group_key`/`$group_id` for groups), and the valid
//!   updates are applied, as `/import` does.
//!
//! Without `strict`, invalid updates are dropped silently while the valid ones apply.

use super::profile_update::{parse_update, ProfileKind, TokenCheck};
use super::store::Store;
use super::*;

/// "each individual update in the request [is limited] to a maximum of 1 MB".
const MAX_UPDATE_BYTES: usize = 1024 * 1024;
/// `POST /engage` and `POST /groups` (told apart by the path).
pub(super) async fn profile_updates(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (kind, endpoint) = match uri.path() {
        "/groups" => (ProfileKind::Groups, Endpoint::Groups),
        _ => (ProfileKind::Users, Endpoint::Engage),
    };
    let body = read_body(body, state.config.max_body_bytes).await;
    answer(state, endpoint, move |state, _| {
        let query = query.as_deref().unwrap_or("");
        evaluate(state, kind, query, &headers, body)
    })
    .await
}

/// Answer flags, from the query string or the form body.
#[derive(Default, Clone, Copy)]
struct Flags {
    verbose: bool,
    strict: bool,
}

/// What a request did.
enum ProfileReply {
    /// Nothing was applied, for this request-wide reason.
    Refused(String),
    /// Updates were validated; the valid ones applied.
    Applied {
        accepted: usize,
        failed: Vec<Value>,
        first_error: Option<String>,
    },
}

impl ProfileReply {
    fn render(self, flags: Flags) -> Response {
        let status_answer = |error: Option<&str>| {
            json_response(
                StatusCode::OK,
                &json!({"status": u8::from(error.is_none()), "error": error}),
            )
        };
        match self {
            ProfileReply::Refused(message) if flags.verbose || flags.strict => {
                status_answer(Some(message.as_str()))
            }
            ProfileReply::Applied {
                accepted, failed, ..
            } if flags.strict && !failed.is_empty() => json_response(
                StatusCode::OK,
                &json!({"status": 0, "error": STRICT_FAILURE, "failed_records": failed,
                    "num_records_imported": accepted}),
            ),
            ProfileReply::Applied {
                accepted: 0,
                first_error,
                ..
            } if flags.verbose || flags.strict => status_answer(Some(
                first_error
                    .as_deref()
                    .unwrap_or("no valid update in the request"),
            )),
            _ if flags.verbose || flags.strict => status_answer(None),
            ProfileReply::Applied { accepted, .. } if accepted > 0 => plain("1"),
            _ => plain("0"),
        }
    }
}

fn plain(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Reads, validates and applies one request, answering it.
fn evaluate(
    state: &ReceiverState,
    kind: ProfileKind,
    query: &str,
    headers: &HeaderMap,
    body: Result<Vec<u8>, Reply>,
) -> Handled {
    let mut flags = Flags::default();
    let updates = match body {
        Err(reply) => {
            count(&mut state.store(), kind, 0, 0);
            return Handled::stored(reply.render(false));
        }
        Ok(body) => read_updates(&state.config, query, headers, body, &mut flags),
    };
    let updates = match updates {
        Ok(updates) => updates,
        Err((message, refused)) => {
            tracing::debug!(?kind, %message, "refused profile request");
            count(&mut state.store(), kind, 0, refused);
            return Handled::stored(ProfileReply::Refused(message).render(flags));
        }
    };
    let token = TokenCheck::for_config(&state.config);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut store = state.store();
    let (mut lines, mut failed, mut first_error) = (Vec::new(), Vec::new(), None);
    let mut accepted = 0usize;
    for (index, record) in updates.iter().enumerate() {
        let line = serde_json::to_string(record).unwrap_or_default();
        let applied = if line.len() > MAX_UPDATE_BYTES {
            Err(fail(
                "update",
                format!("update is {} bytes; the maximum is 1 MB", line.len()),
            ))
        } else {
            parse_update(kind, record, &token)
                .and_then(|update| store.profiles.apply(&update, now_ms))
        };
        match applied {
            Ok(()) => {
                accepted += 1;
                lines.extend_from_slice(
                    format!("{{\"applied_at_ms\":{now_ms},\"update\":{line}}}\n").as_bytes(),
                );
            }
            Err(failure) => {
                first_error.get_or_insert_with(|| failure.message.clone());
                failed.push(failed_record(kind, index, record, failure));
            }
        }
    }
    let logged = store.profiles.log(kind, &lines, accepted as u64);
    let (ok, rejected) = match &logged {
        Ok(()) => (accepted as u64, failed.len() as u64),
        Err(_) => (0, updates.len() as u64),
    };
    count(&mut store, kind, ok, rejected);
    drop(store);
    tracing::debug!(?kind, accepted, rejected = failed.len(), "profile updates");
    match logged {
        Ok(()) => {
            let reply = ProfileReply::Applied {
                accepted,
                failed,
                first_error,
            };
            Handled::stored(reply.render(flags))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not append profile updates");
            Handled::failed(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store profile updates",
            ))
        }
    }
}

/// Counts one request and its updates, and saves the counters.
fn count(store: &mut Store, kind: ProfileKind, accepted: u64, rejected: u64) {
    let stats = match kind {
        ProfileKind::Users => &mut store.endpoints.engage,
        ProfileKind::Groups => &mut store.endpoints.groups,
    };
    stats.requests += 1;
    stats.updates_received += accepted + rejected;
    stats.updates_accepted += accepted;
    stats.updates_rejected += rejected;
    store.save_stats();
}

/// The flags and the updates of a request body, or why the whole request is refused (with
/// how many updates that refuses).
fn read_updates(
    config: &ReceiverConfig,
    query: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
    flags: &mut Flags,
) -> Result<Vec<Value>, (String, u64)> {
    let refuse = |message: String| (message, 0u64);
    let params = parse_pairs(query).map_err(|_| refuse("invalid query string".into()))?;
    let mut set_flags = |pairs: &[(String, String)]| {
        flags.verbose |= param(pairs, "verbose") == Some("1");
        flags.strict |= param(pairs, "strict") == Some("1");
    };
    set_flags(&params);
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if !matches!(encoding.as_str(), "" | "identity") {
            return Err(refuse(format!(
                "unsupported Content-Encoding {encoding:?}: profile updates must not be compressed"
            )));
        }
    }
    let updates = match content_type(headers).as_str() {
        "application/json" => json_records(&body),
        "application/x-www-form-urlencoded" => std::str::from_utf8(&body)
            .map_err(|_| "form body is not UTF-8".to_string())
            .and_then(parse_pairs)
            .and_then(|form| {
                set_flags(&form);
                form_records(param(&form, "data"), json_records)
            }),
        other => Err(format!("unsupported Content-Type {other:?}")),
    }
    .map_err(refuse)?;
    let max = config.max_updates_per_request;
    if updates.is_empty() {
        return Err(refuse("no updates in the request".into()));
    }
    if updates.len() > max {
        let message = format!(
            "too many updates in one request: {} (max {max})",
            updates.len()
        );
        return Err((message, updates.len() as u64));
    }
    Ok(updates)
}

/// A `failed_records` entry: the update's index and identity, the field and the reason.
fn failed_record(kind: ProfileKind, index: usize, record: &Value, failure: Failure) -> Value {
    let id = |field: &str| record.get(field).cloned().unwrap_or(Value::Null);
    let mut entry = json!({"index": index, "field": failure.field, "message": failure.message});
    let ids: &[&str] = match kind {
        ProfileKind::Users => &["$distinct_id"],
        ProfileKind::Groups => &["$group_key", "$group_id"],
    };
    for field in ids {
        entry[*field] = id(field);
    }
    entry
}

/// Fuzzing entry point (`wharf::fuzzing::receiver_profiles`): one `/engage` (or, with
/// `groups`, `/groups`) request read by [`read_updates`], each update validated by
/// [`parse_update`] and applied to profiles in memory (no data directory).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_profiles(groups: bool, query: &str, headers: &HeaderMap, body: Vec<u8>) {
    use super::profile_state::{apply_to, GroupProfiles, UserProfiles};
    let mut config = ReceiverConfig::new("/nonexistent", ReceiverAuth::AnyCredentials);
    config.max_updates_per_request = 64;
    let kind = if groups {
        ProfileKind::Groups
    } else {
        ProfileKind::Users
    };
    let mut flags = Flags::default();
    let updates = match read_updates(&config, query, headers, body, &mut flags) {
        Ok(updates) => updates,
        Err((message, _)) => {
            let _ = ProfileReply::Refused(message).render(flags);
            return;
        }
    };
    let (mut users, mut groups) = (UserProfiles::new(), GroupProfiles::new());
    let mut failed = Vec::new();
    for (index, record) in updates.iter().enumerate() {
        let applied = parse_update(kind, record, &TokenCheck::Any).and_then(|update| match &update
            .target
        {
            super::profile_update::Target::User(id) => apply_to(&mut users, id, &update.op, None),
            super::profile_update::Target::Group { key, id } => {
                apply_to(groups.entry(key.clone()).or_default(), id, &update.op, None)
            }
        });
        if let Err(failure) = applied {
            failed.push(failed_record(kind, index, record, failure));
        }
    }
    let reply = ProfileReply::Applied {
        accepted: updates.len() - failed.len(),
        failed,
        first_error: None,
    };
    let _ = reply.render(flags);
}

#[cfg(test)]
mod tests {
    use super::super::profile_update::{Target, Update};
    use super::*;

    fn user(update: Value) -> Result<Update, String> {
        parse_update(ProfileKind::Users, &update, &TokenCheck::Any).map_err(|f| f.message)
    }

    #[test]
    fn exactly_one_known_operation() {
        let ok = user(json!({"$token": "t", "$distinct_id": "u", "$set": {"a": 1}})).unwrap();
        assert_eq!(ok.target, Target::User("u".into()));
        let two = user(json!({"$token": "t", "$distinct_id": "u", "$set": {}, "$unset": []}));
        assert!(two.unwrap_err().contains("more than one operation"));
        let none = user(json!({"$token": "t", "$distinct_id": "u"}));
        assert!(none.unwrap_err().contains("no operation"));
        let unknown = user(json!({"$token": "t", "$distinct_id": "u", "$sett": {}}));
        assert!(unknown.unwrap_err().contains("unknown field"));
        let group_add = parse_update(
            ProfileKind::Groups,
            &json!({"$token": "t", "$group_key": "c", "$group_id": 1, "$add": {"n": 1}}),
            &TokenCheck::Any,
        );
        assert!(group_add.is_err());
    }

    #[test]
    fn values_are_checked() {
        let add = user(json!({"$token": "t", "$distinct_id": "u", "$add": {"n": "x"}}));
        assert!(add.unwrap_err().contains("numbers"));
        let deep = json!({"a": {"b": {"c": {"d": 1}}}});
        let nested = user(json!({"$token": "t", "$distinct_id": "u", "$set": {"p": deep}}));
        assert!(nested.unwrap_err().contains("deeper"));
        let unset = user(json!({"$token": "t", "$distinct_id": "u", "$unset": "a"}));
        assert!(unset.is_err());
        let token = parse_update(
            ProfileKind::Users,
            &json!({"$token": "other", "$distinct_id": "u", "$delete": null}),
            &TokenCheck::Equals("mine".into()),
        );
        assert!(token.is_err());
        let id = user(json!({"$token": "t", "$distinct_id": " ", "$delete": ""}));
        assert!(id.unwrap_err().contains("$distinct_id"));
    }
}
