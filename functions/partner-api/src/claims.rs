//! The partner's `Idempotency-Key`: its shape, and the fingerprint that ties a key to one
//! request. The claim itself (lease, stored answer, replay) is the repository's.

use shared::crypto::sha256_hex;
use shared::http::ApiError;

/// Validates the `Idempotency-Key` header.
pub fn key(header: Option<&str>) -> Result<String, ApiError> {
    let k = header.ok_or_else(|| {
        ApiError::bad_request("the Idempotency-Key header is required on POST")
            .field("Idempotency-Key")
    })?;
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
        .field("Idempotency-Key"));
    }
    Ok(k.to_owned())
}

/// The hash that ties a key to one request: route and canonical JSON body (key order and
/// whitespace do not matter).
pub fn request_hash(route: &str, body: &serde_json::Value) -> String {
    sha256_hex(format!("{route}\n{body}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(key(Some("order-1")).unwrap(), "order-1");
        for bad in [None, Some(""), Some("a b"), Some("é")] {
            assert_eq!(key(bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert!(key(Some(&"k".repeat(256))).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_key_order_but_not_route_or_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "b":2, "a":1 }"#).unwrap();
        assert_eq!(request_hash("payments", &a), request_hash("payments", &b));
        assert_ne!(request_hash("payments", &a), request_hash("charges", &a));
        assert_ne!(
            request_hash("payments", &a),
            request_hash("payments", &json!({"a": 1, "b": 3}))
        );
    }
}
