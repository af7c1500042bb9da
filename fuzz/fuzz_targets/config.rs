//! The config loader: `wharf.toml` text through `Config::parse` (TOML, `${VAR}` expansion,
//! typed tables, validation) and each warehouse's settings built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = wharf::fuzzing::config(text) {
            // Validation promises: every sync names a defined warehouse, at least one defined
            // destination, and a table or a query (not both).
            for sync in &config.syncs {
                assert!(config.warehouses.contains_key(&sync.warehouse), "{text:?}");
                assert!(!sync.destinations.is_empty(), "{text:?}");
                for d in &sync.destinations {
                    assert!(config.destinations.contains_key(d), "{text:?}");
                }
                assert!(sync.table.is_some() != sync.query.is_some(), "{text:?}");
            }
        }
    }
});
