//! The demo events' mapping (`wharf init`'s `demo_events` sync), for the benches that map
//! demo-shaped rows without a config file.

use wharf_operators::mixpanel::events::{EpochUnit, EventMapping, EventName};

/// The demo events' mapping for `sync_id`; without `with_json` the `properties` JSON column
/// is excluded instead of merged.
pub fn demo_event_mapping(sync_id: &str, with_json: bool) -> EventMapping {
    EventMapping {
        sync_id: sync_id.into(),
        warehouse_type: "duckdb".into(),
        event_name: EventName::Column("event_name".into()),
        time_column: "event_time".into(),
        time_unit: EpochUnit::Auto,
        user_id_column: Some("user_id".into()),
        device_id_column: Some("device_id".into()),
        properties_column: with_json.then(|| "properties".into()),
        key_columns: vec!["event_id".into()],
        exclude_columns: if with_json {
            vec![]
        } else {
            vec!["properties".into()]
        },
    }
}
