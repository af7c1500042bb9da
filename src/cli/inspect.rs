//! `wharf check` and `wharf preview`: what a config reaches, and what a sync would send.

use anyhow::{bail, Result};
use wharf::config::Config;
use wharf::sync::resolve;
use wharf_operators::columns::row_json;

use crate::runtime;

pub fn check(config: &Config) -> Result<()> {
    let rt = runtime()?;
    let mut failures = 0;
    let mut report = |what: String, r: Result<String, String>| match r {
        Ok(detail) => println!("ok    {what}{detail}"),
        Err(e) => {
            failures += 1;
            println!("FAIL  {what}: {e}");
        }
    };
    for name in config.warehouses.keys() {
        let Some(wh) = wharf::warehouse::open(config, name) else {
            continue;
        };
        // E.g. whether mirror syncs on PostgreSQL can read its change stream.
        let detail = wh.change_capture_note();
        report(
            format!("warehouse {name}"),
            wh.check().map(|_| detail).map_err(|e| e.to_string()),
        );
    }
    for (name, d) in &config.destinations {
        let r = d.check(&rt).map_err(|e| e.to_string());
        report(format!("destination {name}"), r);
    }
    for s in &config.syncs {
        let r = resolve(config, &s.name).map(|r| match (&r.cursor, &r.events) {
            (Some(cursor), Some(events)) => format!(
                " ({} columns, cursor `{}`, {} property columns)",
                r.schema.columns.len(),
                cursor.0,
                events.property_columns(&r.schema.arrow).len()
            ),
            _ => format!(
                " ({} columns, {} by primary key {})",
                r.schema.columns.len(),
                format!("{:?}", r.sync.mode).to_lowercase(),
                r.sync.key_columns().join(", ")
            ),
        });
        report(format!("sync {}", s.name), r.map_err(|e| e.to_string()));
    }
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    Ok(())
}

pub fn preview(config: &Config, name: &str, limit: usize) -> Result<()> {
    let r = resolve(config, name)?;
    println!(
        "sync {name}: {} → {}",
        r.source,
        r.sync.destinations.join(", ")
    );
    println!(
        "  table type : {} ({} sync)",
        format!("{:?}", r.sync.table_type).to_lowercase(),
        format!("{:?}", r.sync.mode).to_lowercase()
    );
    if let Some(ev) = &r.events {
        let m = ev.mapping();
        println!("  event name : {:?}", m.event_name);
        println!("  time       : {} ({:?})", m.time_column, m.time_unit);
        println!(
            "  distinct_id: {}",
            m.user_id_column.as_deref().unwrap_or("(none)")
        );
        println!(
            "  $device_id : {}",
            m.device_id_column.as_deref().unwrap_or("(none)")
        );
        println!(
            "  $insert_id : from {}",
            if m.key_columns.is_empty() {
                "the whole row".to_string()
            } else {
                m.key_columns.join(", ")
            }
        );
        println!(
            "  properties : {}",
            ev.property_columns(&r.schema.arrow).join(", ")
        );
    }
    println!(
        "  JSON props : {}",
        r.sync
            .mapping
            .properties_column
            .as_deref()
            .unwrap_or("(none)")
    );
    if let Some(c) = &r.cursor {
        println!("  cursor     : {} ({})", c.0, c.1);
    }
    if !r.schema.primary_key.is_empty() {
        println!("  table's primary key: {}", r.schema.primary_key.join(", "));
    }
    let rt = runtime()?;
    let p = wharf::sync::preview_records(config, &r, limit, &rt, None)?;
    if let Some(c) = &p.changes {
        println!("  sync key   : {}", r.sync.key_columns().join(", "));
        println!(
            "next run would send: {} inserts, {} updates, {} deletes ({} rows in the table; nothing sent, nothing committed)",
            c.inserts, c.updates, c.deletes, c.rows
        );
        println!("records as they would be sent for new rows:");
    } else {
        println!("records as they would be sent:");
    }
    for rec in &p.records {
        println!("{}", String::from_utf8_lossy(rec));
    }
    for rej in &p.rejects {
        println!("REJECTED key={} reason: {}", rej.key, rej.reason);
    }
    let batches = r.warehouse.preview(&r.source, 1)?;
    if batches.is_empty() {
        println!("(the table is empty)");
    } else if let Some(b) = batches.first() {
        println!("first source row: {}", row_json(b, 0));
    }
    Ok(())
}
