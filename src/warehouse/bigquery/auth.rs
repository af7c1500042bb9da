//! Google service-account sign-in: a JWT assertion signed with the account's key, exchanged
//! at Google's token endpoint for an access token, cached until shortly before it expires.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::warehouse::WarehouseError;

/// The fields of a service account's JSON key wharf uses.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type", default)]
    kind: String,
    pub(super) client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// A service account that signs in with its key; holds the current access token.
pub struct ServiceAccount {
    pub(super) client_email: String,
    key: crate::warehouse::jwt::RsaKey,
    key_id: Option<String>,
    token_uri: String,
    token: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// The audience of every assertion, whatever the key's `token_uri` (as Google's own client
/// libraries send it).
const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";

/// The OAuth2 scope wharf asks for.
const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

impl ServiceAccount {
    /// Reads a service account's JSON key (the file Google Cloud's console downloads). The
    /// error never quotes the key.
    pub fn from_json(json: &str) -> Result<ServiceAccount, String> {
        let k: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a service account key (JSON with client_email and private_key): line {}, column {}",
                e.line(),
                e.column()
            )
        })?;
        if !k.kind.is_empty() && k.kind != "service_account" {
            return Err(format!(
                "the key is of type `{}`; wharf needs a `service_account` key",
                k.kind
            ));
        }
        Ok(ServiceAccount {
            key: crate::warehouse::jwt::RsaKey::from_pem(&k.private_key)?,
            client_email: k.client_email,
            key_id: k.private_key_id,
            token_uri: k.token_uri,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The signed assertion of the `jwt-bearer` grant, issued at `now`.
    pub fn assertion(&self, now: i64) -> Result<String, String> {
        self.key.sign(
            &json!({
                "iss": self.client_email,
                "scope": BIGQUERY_SCOPE,
                "aud": GOOGLE_TOKEN_AUDIENCE,
                "iat": now,
                "exp": now + 3600,
            }),
            self.key_id.as_deref(),
        )
    }

    /// A valid access token: the cached one, or a new one from `token_uri`.
    pub(super) async fn access_token(&self, what: &str) -> Result<String, WarehouseError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if std::time::Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let refused = |message: String| WarehouseError::Open {
            what: what.to_string(),
            message: format!(
                "service-account sign-in as {} at {}: {message}",
                self.client_email, self.token_uri
            ),
        };
        let assertion = self
            .assertion(crate::warehouse::jwt::now_secs())
            .map_err(refused)?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let client = crate::warehouse::http::client(what, Duration::from_secs(30))?;
        let resp = crate::warehouse::http::send(what, || {
            client
                .post(&self.token_uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
        })
        .await?;
        let status = resp.status();
        let answer: Value =
            serde_json::from_slice(&crate::warehouse::http::body(what, resp).await?)
                .unwrap_or(Value::Null);
        let token = answer["access_token"]
            .as_str()
            .filter(|_| status.is_success());
        let Some(token) = token else {
            return Err(refused(format!(
                "HTTP {status}: {} {}",
                answer["error"].as_str().unwrap_or("no error code"),
                answer["error_description"].as_str().unwrap_or("")
            )));
        };
        let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
        let until = std::time::Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *cached = Some((token.to_string(), until));
        Ok(token.to_string())
    }
}
