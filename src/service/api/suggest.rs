//! What the console suggests for a table: which columns look like the event time, the insert
//! time, a user / device / group id, JSON properties and the key; and which sync modes the
//! table type and the warehouse allow.

use serde::Serialize;
use wharf_operators::arrow::datatypes::DataType;

use crate::config::TableType;
use crate::warehouse::{TableSchema, Warehouse};

/// A column as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type (Arrow's name for it).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The mapping the console proposes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Suggestions {
    /// The event time.
    pub time_column: Option<String>,
    /// The insert-time cursor of append syncs.
    pub insert_time_column: Option<String>,
    /// The user's distinct id.
    pub user_id_column: Option<String>,
    /// The device id.
    pub device_id_column: Option<String>,
    /// A group id.
    pub group_id_column: Option<String>,
    /// A JSON column of more properties.
    pub properties_column: Option<String>,
    /// The event name.
    pub event_name_column: Option<String>,
    /// The key of full and mirror syncs.
    pub key_columns: Vec<String>,
}

/// A sync mode the table allows, and what it will do.
#[derive(Debug, Clone, Serialize)]
pub struct ModeChoice {
    /// `append`, `full`, `mirror` or `one_time`.
    pub mode: &'static str,
    /// What it does here.
    pub note: String,
}

fn is_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

fn is_text_or_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// The first column (by `names` order of preference, then table order) that `fits` and
/// whose lowercase name equals or contains one of `names`.
fn pick(
    columns: &[(String, DataType)],
    names: &[&str],
    fits: fn(&DataType) -> bool,
) -> Option<String> {
    for want in names {
        if let Some((n, _)) = columns
            .iter()
            .find(|(n, t)| fits(t) && n.to_lowercase() == *want)
        {
            return Some(n.clone());
        }
    }
    for want in names {
        if let Some((n, _)) = columns
            .iter()
            .find(|(n, t)| fits(t) && n.to_lowercase().contains(want))
        {
            return Some(n.clone());
        }
    }
    None
}

/// The table's columns and the mapping proposed for them.
pub fn suggest(schema: &TableSchema) -> (Vec<Column>, Suggestions) {
    let columns: Vec<(String, DataType)> = schema
        .arrow
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    // The warehouse's own type names where it gave them, else Arrow's.
    let listed = columns
        .iter()
        .map(|(n, t)| Column {
            name: n.clone(),
            kind: schema
                .columns
                .iter()
                .find(|c| &c.name == n)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| t.to_string()),
        })
        .collect();
    let time_column = pick(
        &columns,
        &[
            "time",
            "event_time",
            "timestamp",
            "ts",
            "occurred_at",
            "created_at",
        ],
        is_time,
    )
    .or_else(|| {
        columns
            .iter()
            .find(|(_, t)| is_time(t))
            .map(|(n, _)| n.clone())
    });
    let insert_time_column = pick(
        &columns,
        &[
            "inserted_at",
            "insert_time",
            "loaded_at",
            "updated_at",
            "_loaded_at",
        ],
        is_time,
    )
    .or_else(|| time_column.clone());
    let json =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let suggestions = Suggestions {
        user_id_column: pick(
            &columns,
            &[
                "distinct_id",
                "user_id",
                "userid",
                "uid",
                "customer_id",
                "account_id",
            ],
            is_text_or_int,
        ),
        device_id_column: pick(&columns, &["device_id", "anonymous_id"], is_text_or_int),
        group_id_column: pick(
            &columns,
            &[
                "company_id",
                "group_id",
                "org_id",
                "organization_id",
                "account_id",
            ],
            is_text_or_int,
        ),
        properties_column: pick(
            &columns,
            &[
                "properties",
                "props",
                "attributes",
                "payload",
                "json",
                "variant",
                "super",
            ],
            json,
        ),
        event_name_column: pick(&columns, &["event", "event_name", "name", "action"], json),
        key_columns: if schema.primary_key.is_empty() {
            pick(&columns, &["id"], is_text_or_int)
                .into_iter()
                .collect()
        } else {
            schema.primary_key.clone()
        },
        time_column,
        insert_time_column,
    };
    (listed, suggestions)
}

/// The modes `table_type` allows on `warehouse`, each with what it will do (`change_stream`:
/// whether the warehouse's kind may have a change stream wharf reads).
pub fn modes(
    table_type: TableType,
    warehouse: &dyn Warehouse,
    change_stream: bool,
) -> Vec<ModeChoice> {
    let capture = warehouse.change_capture_note();
    let capture = capture.trim().trim_start_matches('(').trim_end_matches(')');
    let mirror = match (capture.is_empty(), change_stream) {
        (false, _) => format!("inserts, updates and deletes; {capture}"),
        (true, true) => "inserts, updates and deletes, from the table's change output (its change function) when it is on, else by diffing a snapshot of the table against the last one each run".to_string(),
        (true, false) => "inserts, updates and deletes, by diffing a snapshot of the table against the last one each run".to_string(),
    };
    let mut out = vec![ModeChoice {
        mode: "append",
        note: match table_type {
            TableType::Events => "new rows past the last run's insert time".into(),
            _ => "new rows past the last run's insert time, the latest per key".into(),
        },
    }];
    if table_type != TableType::Events {
        out.push(ModeChoice {
            mode: "full",
            note: "the whole table each run; only changed rows are sent".into(),
        });
    }
    out.push(ModeChoice {
        mode: "mirror",
        note: mirror,
    });
    out.push(ModeChoice {
        mode: "one_time",
        note: "the whole table once".into(),
    });
    out
}
