//! The console's routes: warehouses and destinations added, tested, edited and removed;
//! tables browsed with mapping suggestions; a sync previewed, created, edited and deleted.
//! Every edit goes through [`crate::config::edit`] (checked by the CLI's loader, comments kept)
//! and is then loaded as a SIGHUP reload would; a config the service cannot load is put back.
//! Secrets typed in are stored in the secrets file, never returned, and scrubbed from every
//! message shown.
// CONSOLE-API-READY

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequest, Request};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::suggest::{modes, suggest};
use super::{error, json as answer, ApiState};
use crate::config::edit::{Edit, EditError, Section};
use crate::config::fields::Kind;
use crate::config::{Config, Secrets, TableType};
use crate::service::Shared;
use crate::sync::SyncError;
use crate::warehouse::{SourceRef, WarehouseError};

/// One console edit at a time: each reads the file, checks and writes it.
static EDITS: Mutex<()> = Mutex::new(());

/// The console's routes (they sit behind the token check).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/kinds", get(kinds))
        .route(
            "/warehouses",
            get(|s: State<ApiState>| entries(s, Section::Warehouses)),
        )
        .route("/warehouses/test", post(test_draft))
        .route(
            "/warehouses/{name}",
            axum::routing::put(|s: State<ApiState>, p: Path<String>, b: Json<EntryBody>| {
                set_entry(s, Section::Warehouses, p, b)
            })
            .delete(|s: State<ApiState>, p: Path<String>| remove_entry(s, Section::Warehouses, p)),
        )
        .route("/warehouses/{name}/test", post(test_saved))
        .route("/warehouses/{name}/tables", get(tables))
        .route("/warehouses/{name}/columns", get(columns))
        .route(
            "/destinations",
            get(|s: State<ApiState>| entries(s, Section::Destinations)),
        )
        .route(
            "/destinations/{name}",
            axum::routing::put(|s: State<ApiState>, p: Path<String>, b: Json<EntryBody>| {
                set_entry(s, Section::Destinations, p, b)
            })
            .delete(|s: State<ApiState>, p: Path<String>| {
                remove_entry(s, Section::Destinations, p)
            }),
        )
        .route("/preview", post(preview))
        .route("/syncs/{name}/config", get(sync_config).put(replace_sync))
}

/// A JSON request body; one that is not JSON or not of the shape wanted is refused with a 400
/// in the API's error shape, naming the key where it went wrong.
pub(super) struct Json<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de)
            .map(Json)
            .map_err(|e| {
                let path = e.path().to_string();
                answer(
                    StatusCode::BAD_REQUEST,
                    &json!({
                        "error": format!("the request body: {}", e.inner()),
                        "field": (path != ".").then_some(path),
                    }),
                )
            })
    }
}

/// A console answer: a status and a JSON body, or a refusal naming the field it concerns.
type Answer = Result<(StatusCode, Value), Refusal>;

struct Refusal {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Refusal {
    fn bad(message: impl Into<String>, field: Option<&str>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: field.map(str::to_string),
        }
    }
}

impl From<EditError> for Refusal {
    fn from(e: EditError) -> Refusal {
        let status = match &e {
            EditError::Invalid { .. } => StatusCode::BAD_REQUEST,
            EditError::NotFound(_) => StatusCode::NOT_FOUND,
            EditError::Conflict(_) => StatusCode::CONFLICT,
            EditError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let field = match &e {
            EditError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        Refusal {
            status,
            message: e.to_string(),
            field,
        }
    }
}

/// The service's state, as every console route takes it.
type Service = State<ApiState>;

/// Runs `f` on a thread of its own (it may block on a warehouse) and answers with it; every
/// message has the config's secrets scrubbed out.
async fn blocking(
    state: &ApiState,
    f: impl FnOnce(&Arc<Shared>) -> Answer + Send + 'static,
) -> Response {
    let shared = state.shared.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("wharf-console".into())
        .spawn(move || {
            let result = f(&shared);
            let secrets = crate::config::secrets::load(&shared.config_path).unwrap_or_default();
            let _ = tx.send(result.map_err(|mut r| {
                r.message = scrub(&r.message, &secrets);
                r
            }));
        });
    if let Err(e) = spawned {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    match rx.await {
        Ok(Ok((status, body))) => answer(status, &body),
        Ok(Err(r)) => answer(r.status, &json!({ "error": r.message, "field": r.field })),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
    }
}

/// `text` with every stored secret (and any typed in) replaced by `***`.
fn scrub(text: &str, secrets: &Secrets) -> String {
    let mut out = text.to_string();
    for s in secrets.values().filter(|s| s.len() >= 3) {
        out = out.replace(s, "***");
    }
    out
}

/// Edits the config under the edit lock and loads it as a reload would; a config the
/// service refuses is put back.
fn edit(shared: &Arc<Shared>, f: impl FnOnce(&mut Edit) -> Result<Value, Refusal>) -> Answer {
    let _one = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    let mut e = Edit::open(&shared.config_path)?;
    let body = f(&mut e)?;
    let saved = e.save()?;
    if let Err(message) = shared.reload() {
        saved.restore()?;
        let _ = shared.reload();
        return Err(Refusal::bad(message, None));
    }
    Ok((StatusCode::OK, body))
}

async fn kinds() -> Response {
    answer(
        StatusCode::OK,
        &json!({
            "warehouses": crate::warehouse::registry::kinds(),
            "destinations": crate::destination::kinds(),
        }),
    )
}

fn kinds_of(section: Section) -> Vec<Kind> {
    match section {
        Section::Warehouses => crate::warehouse::registry::kinds(),
        Section::Destinations => crate::destination::kinds(),
    }
}

/// The kind `kind` of `section`, with its form.
fn kind_of(section: Section, kind: &str) -> Result<Kind, Refusal> {
    let kinds = kinds_of(section);
    let known: Vec<_> = kinds.iter().map(|k| k.kind).collect();
    let unknown = format!("unknown type `{kind}`; one of: {}", known.join(", "));
    kinds
        .into_iter()
        .find(|k| k.kind == kind)
        .ok_or_else(|| Refusal::bad(unknown, Some("type")))
}

/// The secret keys of `kind` (none for an unknown kind).
fn secret_keys(section: Section, kind: &str) -> Vec<&'static str> {
    kind_of(section, kind)
        .map(|k| {
            k.fields
                .iter()
                .filter(|f| f.secret)
                .map(|f| f.name)
                .collect()
        })
        .unwrap_or_default()
}

/// A section's entries as the console shows them: secrets by name only.
async fn entries(State(state): Service, section: Section) -> Response {
    blocking(&state, move |shared| {
        let e = Edit::open(&shared.config_path)?;
        let list: Vec<Value> = e
            .entries(section)
            .into_iter()
            .map(|(name, table)| {
                let kind = table.get("type").and_then(|t| t.as_str()).unwrap_or("");
                let secret = secret_keys(section, kind);
                let mut settings = Map::new();
                let (mut set, mut kept) = (Vec::new(), Vec::new());
                for (k, v) in table.iter() {
                    match v.as_value() {
                        _ if k == "type" => {}
                        _ if secret.contains(&k) => set.push(k.to_string()),
                        // Tables (a `service_account`, librdkafka `properties`) may hold
                        // secrets: named only, and kept as written by an edit.
                        Some(toml_edit::Value::InlineTable(_)) | None => kept.push(k.to_string()),
                        Some(v) => {
                            settings.insert(k.to_string(), plain(v));
                        }
                    }
                }
                json!({
                    "name": name, "type": kind, "settings": settings, "secrets": set,
                    "kept": kept,
                })
            })
            .collect();
        Ok((StatusCode::OK, Value::Array(list)))
    })
    .await
}

/// A TOML value as JSON (inline tables and arrays included).
fn plain(v: &toml_edit::Value) -> Value {
    match v {
        toml_edit::Value::String(s) => Value::from(s.value().as_str()),
        toml_edit::Value::Integer(i) => Value::from(*i.value()),
        toml_edit::Value::Float(f) => Value::from(*f.value()),
        toml_edit::Value::Boolean(b) => Value::from(*b.value()),
        toml_edit::Value::Datetime(d) => Value::from(d.value().to_string()),
        toml_edit::Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        toml_edit::Value::InlineTable(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.to_string(), plain(v))).collect())
        }
    }
}

/// A warehouse or destination as the console sends it.
#[derive(Deserialize)]
struct EntryBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    settings: Map<String, Value>,
    #[serde(default)]
    secrets: Map<String, Value>,
    /// Only for a test before saving.
    #[serde(default)]
    name: Option<String>,
}

impl EntryBody {
    /// Writes this entry as `name` of `section` (its type one of the section's kinds).
    fn write(&self, e: &mut Edit, section: Section, name: &str) -> Result<(), Refusal> {
        let kind = kind_of(section, &self.kind)?;
        e.set_entry(
            section,
            name,
            &self.kind,
            kind.fields,
            &self.settings,
            &self.secrets,
        )?;
        Ok(())
    }
}

async fn set_entry(
    State(state): Service,
    section: Section,
    Path(name): Path<String>,
    Json(body): Json<EntryBody>,
) -> Response {
    blocking(&state, move |shared| {
        edit(shared, |e| {
            body.write(e, section, &name)?;
            Ok(json!({ "name": name }))
        })
    })
    .await
}

async fn remove_entry(
    State(state): Service,
    section: Section,
    Path(name): Path<String>,
) -> Response {
    blocking(&state, move |shared| {
        let config = shared.config();
        let users: Vec<&str> = config
            .syncs
            .iter()
            .filter(|s| match section {
                Section::Warehouses => s.warehouse == name,
                Section::Destinations => s.destinations.contains(&name),
            })
            .map(|s| s.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(Refusal {
                status: StatusCode::CONFLICT,
                message: format!(
                    "`{name}` is used by sync(s) {}; delete or change them first",
                    users.join(", ")
                ),
                field: None,
            });
        }
        edit(shared, |e| {
            e.remove_entry(section, &name)?;
            Ok(json!({ "deleted": name }))
        })
    })
    .await
}

/// The result of a connection test: the server's own message on failure.
fn test_warehouse(config: &Config, name: &str) -> Value {
    let Some(wh) = crate::warehouse::open(config, name) else {
        return json!({ "ok": false, "error": format!("no warehouse named `{name}`") });
    };
    match wh.check().and_then(|_| wh.list_tables()) {
        Ok(tables) => json!({ "ok": true, "tables": tables.len() }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

async fn test_saved(State(state): Service, Path(name): Path<String>) -> Response {
    blocking(&state, move |shared| {
        Ok((StatusCode::OK, test_warehouse(&shared.config(), &name)))
    })
    .await
}

/// Tests a warehouse before it is saved: the current config with it set, in memory only.
async fn test_draft(State(state): Service, Json(body): Json<EntryBody>) -> Response {
    blocking(&state, move |shared| {
        let name = body.name.clone().unwrap_or_else(|| "draft".into());
        let mut e = Edit::open(&shared.config_path)?;
        body.write(&mut e, Section::Warehouses, &name)?;
        let mut config = e.check()?;
        config.base_dir = shared.config().base_dir.clone();
        let mut result = test_warehouse(&config, &name);
        // What was typed in is scrubbed too (it is not stored yet).
        if let Some(msg) = result.get("error").and_then(Value::as_str) {
            let mut typed = Secrets::default();
            for (k, v) in &body.secrets {
                if let Some(v) = v.as_str() {
                    typed.set(k, v);
                }
            }
            let clean = scrub(&scrub(msg, &e.secrets), &typed);
            result["error"] = Value::from(clean);
        }
        Ok((StatusCode::OK, result))
    })
    .await
}

async fn tables(State(state): Service, Path(name): Path<String>) -> Response {
    blocking(&state, move |shared| {
        let config = shared.config();
        let wh = crate::warehouse::open(&config, &name)
            .ok_or_else(|| not_found(format!("no warehouse named `{name}`")))?;
        let tables = wh
            .list_tables()
            .map_err(|e| Refusal::bad(e.to_string(), None))?;
        Ok((StatusCode::OK, json!({ "tables": tables })))
    })
    .await
}

fn not_found(message: String) -> Refusal {
    Refusal {
        status: StatusCode::NOT_FOUND,
        message,
        field: None,
    }
}

#[derive(Deserialize)]
struct ColumnsQuery {
    table: String,
    #[serde(default)]
    table_type: Option<String>,
}

async fn columns(
    State(state): Service,
    Path(name): Path<String>,
    Query(q): Query<ColumnsQuery>,
) -> Response {
    blocking(&state, move |shared| {
        let config = shared.config();
        let wh = crate::warehouse::open(&config, &name)
            .ok_or_else(|| not_found(format!("no warehouse named `{name}`")))?;
        let table_type = match q.table_type.as_deref().unwrap_or("events") {
            "events" => TableType::Events,
            "users" => TableType::Users,
            "groups" => TableType::Groups,
            "lookup" => TableType::Lookup,
            other => {
                return Err(Refusal::bad(
                    format!("unknown table type `{other}`: events, users, groups or lookup"),
                    Some("table_type"),
                ))
            }
        };
        let schema = wh
            .describe(&SourceRef::Table(q.table.clone()))
            .map_err(|e| Refusal::bad(e.to_string(), Some("table")))?;
        let (columns, suggestions) = suggest(&schema);
        Ok((
            StatusCode::OK,
            json!({
                "columns": columns,
                "primary_key": schema.primary_key,
                "suggestions": suggestions,
                "modes": modes(
                    table_type,
                    wh.as_ref(),
                    config.warehouses.get(&name).is_some_and(|w| w.has_change_stream()),
                ),
            }),
        ))
    })
    .await
}

/// A sync error as a refusal naming the form field it concerns, when it is known.
fn sync_refusal(e: &SyncError) -> Refusal {
    use wharf_operators::columns::MappingError;
    let field = match e {
        SyncError::Mapping(_, MappingError::UnknownColumn { role, .. })
        | SyncError::Mapping(_, MappingError::WrongType { role, .. }) => {
            let role = *role;
            if role.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                Some(match role {
                    "primary_key" | "key_columns" => "primary_key".to_string(),
                    r => format!("mapping.{r}"),
                })
            } else {
                None
            }
        }
        SyncError::Warehouse(_, WarehouseError::MissingTable { .. }) => Some("table".into()),
        _ => None,
    };
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: e.to_string(),
        field,
    }
}

/// The current config with `draft` added (or put in place of the sync `replacing`), checked
/// and resolved, in memory only.
fn with_draft(
    shared: &Arc<Shared>,
    draft: &Value,
    replacing: Option<&str>,
) -> Result<(Config, crate::sync::ResolvedSync), Refusal> {
    let mut e = Edit::open(&shared.config_path)?;
    if let Some(old) = replacing {
        e.remove_sync(old)?;
    }
    let name = e.add_sync(draft)?;
    let mut config = e.check()?;
    config.base_dir = shared.config().base_dir.clone();
    let resolved = crate::sync::resolve(&config, &name).map_err(|e| sync_refusal(&e))?;
    Ok((config, resolved))
}

const PREVIEW_ROWS: usize = 20;

async fn preview(State(state): Service, Json(draft): Json<Value>) -> Response {
    blocking(&state, move |shared| {
        // A preview of an existing sync's edit replaces it; a new one is added.
        let name = draft.get("name").and_then(Value::as_str).unwrap_or("");
        let exists = shared.config().sync(name).is_some();
        let (config, resolved) = with_draft(shared, &draft, exists.then_some(name))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Refusal::bad(e.to_string(), None))?;
        let p = crate::sync::preview_records(
            &config,
            &resolved,
            PREVIEW_ROWS,
            &rt,
            Some(&shared.store),
        )
            .map_err(|e| sync_refusal(&e))?;
        let records: Vec<Value> = p
            .records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(r).into_owned())))
            .collect();
        let rejects: Vec<Value> = p
            .rejects
            .iter()
            .map(|r| json!({ "key": r.key, "reason": r.reason }))
            .collect();
        let changes = p.changes.map(|c| {
            json!({ "inserts": c.inserts, "updates": c.updates, "deletes": c.deletes, "rows": c.rows })
        });
        Ok((
            StatusCode::OK,
            json!({ "records": records, "rejects": rejects, "changes": changes }),
        ))
    })
    .await
}

pub(super) async fn create_sync(State(state): Service, Json(draft): Json<Value>) -> Response {
    blocking(&state, move |shared| {
        let name = draft.get("name").and_then(Value::as_str).unwrap_or("");
        if shared.config().sync(name).is_some() {
            return Err(Refusal {
                status: StatusCode::CONFLICT,
                message: format!("a sync named `{name}` exists; choose another name"),
                field: Some("name".into()),
            });
        }
        with_draft(shared, &draft, None)?;
        let (status, body) = edit(shared, |e| {
            let name = e.add_sync(&draft)?;
            let (_, version) = e.sync(&name)?;
            Ok(json!({ "name": name, "version": version }))
        })?;
        let _ = status;
        Ok((StatusCode::CREATED, body))
    })
    .await
}

async fn sync_config(State(state): Service, Path(name): Path<String>) -> Response {
    blocking(&state, move |shared| {
        let e = Edit::open(&shared.config_path)?;
        let (sync, version) = e.sync(&name)?;
        Ok((StatusCode::OK, json!({ "sync": sync, "version": version })))
    })
    .await
}

#[derive(Deserialize)]
struct ReplaceBody {
    sync: Value,
    version: String,
}

async fn replace_sync(
    State(state): Service,
    Path(name): Path<String>,
    Json(body): Json<ReplaceBody>,
) -> Response {
    blocking(&state, move |shared| {
        with_draft(shared, &body.sync, Some(&name))?;
        edit(shared, |e| {
            e.replace_sync(&name, &body.sync, &body.version)?;
            let new_name = body
                .sync
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_string();
            let (_, version) = e.sync(&new_name)?;
            Ok(json!({ "name": new_name, "version": version }))
        })
    })
    .await
}

/// Removes a sync from the config; then forgets its state and drops what it holds in the
/// warehouse (a PostgreSQL mirror's replication slot and publication).
pub(super) async fn delete_sync(State(state): Service, Path(name): Path<String>) -> Response {
    blocking(&state, move |shared| {
        let before = shared.config();
        if before.sync(&name).is_none() {
            return Err(not_found(format!("no sync named `{name}`")));
        }
        edit(shared, |e| {
            e.remove_sync(&name)?;
            Ok(Value::Null)
        })?;
        let dropped =
            crate::sync::reset_sync_in(&before, &name, &shared.store).map_err(|e| Refusal {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!(
                    "`{name}` was removed from the config, but its state could not be cleared: {e}"
                ),
                field: None,
            })?;
        Ok((
            StatusCode::OK,
            json!({ "deleted": name, "dropped": dropped }),
        ))
    })
    .await
}
