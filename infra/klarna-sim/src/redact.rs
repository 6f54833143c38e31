//! Masks secrets (customer tokens, session tokens, signing keys) for logs: a short SHA-256
//! fingerprint correlates log lines without revealing the value.

use ring::digest;

/// `sha256:1a2b3c4d5e6f`: the first 12 hex digits of the value's SHA-256.
pub(crate) fn secret(value: &str) -> String {
    let d = digest::digest(&digest::SHA256, value.as_bytes());
    format!("sha256:{}", &hex::encode(d.as_ref())[..12])
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_hides_the_value_and_is_stable() {
        let t = "krn:partner:global:test:identity:customer-token:abc";
        let m = super::secret(t);
        assert_eq!(m, super::secret(t));
        assert_ne!(m, super::secret("other"));
        assert!(m.starts_with("sha256:") && m.len() == 19 && !m.contains("abc"));
    }
}
