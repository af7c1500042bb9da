//! RS256 JSON Web Tokens from an RSA private key, for the warehouses that sign in with a key
//! pair: Snowflake's key-pair authentication and Google's service-account OAuth2 flow.
//!
//! Signing uses the aws-lc-rs provider rustls already builds (no other crypto crate); the key
//! is read from PEM (`BEGIN PRIVATE KEY`, PKCS#8, or `BEGIN RSA PRIVATE KEY`, PKCS#1). An
//! encrypted key (`BEGIN ENCRYPTED PRIVATE KEY`) is refused with the command that decrypts it.
//! Neither the key nor a token ever appears in an error or a log line.

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::SignatureScheme;
use serde_json::Value;

/// An RSA key that signs tokens.
pub struct RsaKey {
    key: std::sync::Arc<dyn rustls::sign::SigningKey>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKey(***)")
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|s| s.common.hash_provider.hash(data).as_ref().to_vec())
        .unwrap_or_default()
}

impl RsaKey {
    /// Reads a PEM private key. The error says what is wrong with it, never its contents.
    pub fn from_pem(pem: &str) -> Result<RsaKey, String> {
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(
                "the private key is encrypted; wharf reads unencrypted PKCS#8 keys: \
                 `openssl pkcs8 -in key.p8 -out key-plain.p8 -nocrypt` writes one (keep it as \
                 private as the original)"
                    .into(),
            );
        }
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            "not a PEM private key (expected a `-----BEGIN PRIVATE KEY-----` or \
             `-----BEGIN RSA PRIVATE KEY-----` block)"
                .to_string()
        })?;
        let key = rustls::crypto::aws_lc_rs::sign::RsaSigningKey::new(&der)
            .map_err(|_| "the private key is not an RSA key (RS256 needs RSA)".to_string())?;
        Ok(RsaKey {
            key: std::sync::Arc::new(key),
        })
    }

    /// The DER `SubjectPublicKeyInfo` of the key's public half.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key
            .public_key()
            .map(|k| k.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// `header.claims.signature` signed with RS256; `kid` goes in the header when given.
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> Result<String, String> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = Value::from(kid);
        }
        let mut token = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
            .ok_or("the key cannot sign with RS256")?;
        let signature = signer
            .sign(token.as_bytes())
            .map_err(|_| "signing the token failed".to_string())?;
        token.push('.');
        token.push_str(&b64url(&signature));
        Ok(token)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit test key (generated for these tests; it protects nothing).
    pub(crate) const TEST_KEY: &str = include_str!("../../tests/data/test-rsa-key.pem");

    #[test]
    fn signs_a_three_part_token() {
        let key = RsaKey::from_pem(TEST_KEY).unwrap();
        let token = key
            .sign(&serde_json::json!({"iss": "a", "exp": 1}), Some("k1"))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "k1");
        // RSA-2048 signatures are 256 bytes.
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        assert_eq!(sig.len(), 256);
        assert!(key.public_key_der().len() > 256);
    }

    #[test]
    fn refuses_what_it_cannot_use_without_echoing_it() {
        let e = RsaKey::from_pem("secret-looking garbage").unwrap_err();
        assert!(!e.contains("garbage"), "{e}");
        let e = RsaKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.contains("-nocrypt"), "{e}");
    }

    #[test]
    fn sha256_of_abc() {
        let h = sha256(b"abc");
        assert_eq!(
            h.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
