//! Data residency: each region sends every endpoint (`/import`, `/engage`, `/groups`, lookup
//! tables) to Mixpanel's documented host for it, and `api_host` overrides the region.

use std::time::Duration;

use wharf::config::{Config, DestinationConfig};
use wharf::destination::mixpanel::engage::{MixpanelProfiles, ProfileEndpoint};
use wharf::destination::mixpanel::import::MixpanelImport;
use wharf::destination::mixpanel::lookup::MixpanelLookupTable;
use wharf::destination::mixpanel::MixpanelConfig;

fn destination(region: Option<&str>, api_host: Option<&str>) -> MixpanelConfig {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wharf.toml");
    let mut toml = String::from(
        "[destinations.mp]\ntype = \"mixpanel\"\nproject_id = \"42\"\nproject_token = \"tok\"\n\
         service_account = { username = \"sa\", secret = \"test-secret\" }\n",
    );
    if let Some(r) = region {
        toml.push_str(&format!("region = \"{r}\"\n"));
    }
    if let Some(h) = api_host {
        toml.push_str(&format!("api_host = \"{h}\"\n"));
    }
    std::fs::write(&path, toml).expect("config");
    let config = Config::load(&path).expect("valid config");
    match &config.destinations["mp"] {
        DestinationConfig::Mixpanel(m) => (**m).clone(),
        other => panic!("not a Mixpanel destination: {other:?}"),
    }
}

/// The URLs of every endpoint for a destination.
fn urls(m: &MixpanelConfig) -> [String; 4] {
    let t = Duration::from_secs(5);
    let columns = ["id".to_string(), "name".to_string()];
    [
        MixpanelImport::new(m, t).expect("import").url().to_string(),
        MixpanelProfiles::new(m, ProfileEndpoint::Users, t)
            .expect("engage")
            .url()
            .to_string(),
        MixpanelProfiles::new(m, ProfileEndpoint::Groups, t)
            .expect("groups")
            .url()
            .to_string(),
        MixpanelLookupTable::new(m, "0f0e0d0c-0b0a-4909-8807-060504030201", &columns, t)
            .expect("lookup")
            .url()
            .to_string(),
    ]
}

fn expected(host: &str) -> [String; 4] {
    [
        format!("{host}/import?strict=1&project_id=42"),
        format!("{host}/engage?verbose=1&strict=1&ip=0"),
        format!("{host}/groups?verbose=1&strict=1"),
        format!("{host}/lookup-tables/0f0e0d0c-0b0a-4909-8807-060504030201?project_id=42"),
    ]
}

#[test]
fn each_region_sends_every_endpoint_to_its_documented_host() {
    assert_eq!(
        urls(&destination(None, None)),
        expected("https://api.mixpanel.com")
    );
    assert_eq!(
        urls(&destination(Some("us"), None)),
        expected("https://api.mixpanel.com")
    );
    assert_eq!(
        urls(&destination(Some("eu"), None)),
        expected("https://api-eu.mixpanel.com")
    );
    assert_eq!(
        urls(&destination(Some("in"), None)),
        expected("https://api-in.mixpanel.com")
    );
}

#[test]
fn api_host_overrides_the_region_for_every_endpoint() {
    for region in [None, Some("eu"), Some("in")] {
        assert_eq!(
            urls(&destination(region, Some("http://127.0.0.1:8765/"))),
            expected("http://127.0.0.1:8765"),
            "region {region:?}"
        );
    }
}

#[test]
fn an_unknown_region_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wharf.toml");
    std::fs::write(
        &path,
        "[destinations.mp]\ntype = \"mixpanel\"\nproject_token = \"tok\"\nregion = \"asia\"\n",
    )
    .expect("config");
    let err = Config::load(&path)
        .expect_err("an unknown region")
        .to_string();
    assert!(
        err.contains("destinations.mp") && err.contains("region") && err.contains("asia"),
        "{err}"
    );
}
