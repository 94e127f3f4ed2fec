//! Names and hashes as Kubernetes' controllers make them, but deterministic.
//!
//! - `pod-template-hash` / `controller-revision-hash`: Kubernetes computes FNV-1a-32 over the
//!   pod template and encodes the *decimal* hash with `rand.SafeEncodeString` (so the hash is
//!   1–10 characters, 10 in most cases, drawn from `4-9bcdf`). We hash the canonical JSON of the
//!   template (sorted keys, compact) instead of Go's object dump, so the value differs from a real
//!   cluster's but has the same shape and changes exactly when the template changes.
//! - Random suffixes (`generateName`): 5 characters of the same safe alphabet, derived from a
//!   seed (workload key + replica index) instead of a random source.

use serde_json::Value;

/// Kubernetes' `rand` alphabet: no vowels, no look-alike characters.
pub const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Length of the random suffix the API server appends for `generateName`.
pub const SUFFIX_LEN: usize = 5;

/// `generateName` prefixes are cut so the generated name fits a DNS label (63 - 5).
pub const MAX_GENERATE_NAME_PREFIX: usize = 58;

/// FNV-1a, 32 bit.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn alphabet_char(i: u64) -> char {
    let idx = usize::try_from(i % 27).unwrap_or(0);
    SAFE_ALPHABET.get(idx).map_or('b', |&b| char::from(b))
}

/// `rand.SafeEncodeString`: maps every byte into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| alphabet_char(u64::from(b))).collect()
}

/// The template hash used for `pod-template-hash` and `controller-revision-hash`.
pub fn template_hash(template: &Value) -> String {
    let canonical = canonical_json(template);
    safe_encode(&fnv1a32(canonical.as_bytes()).to_string())
}

/// A deterministic 5-character suffix in the safe alphabet.
pub fn random_suffix(seed: &str) -> String {
    let mut h = mix64(fnv1a64(seed.as_bytes()));
    let mut out = String::with_capacity(SUFFIX_LEN);
    for _ in 0..SUFFIX_LEN {
        out.push(alphabet_char(h));
        h /= 27;
    }
    out
}

/// `names.SimpleNameGenerator`: the prefix (cut to 58 bytes) plus a 5-character suffix.
pub fn generate_name(prefix: &str, seed: &str) -> String {
    let mut end = prefix.len().min(MAX_GENERATE_NAME_PREFIX);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{}",
        &prefix[..end],
        random_suffix(&format!("{prefix}/{seed}"))
    )
}

/// A deterministic, UUID-shaped (version 4 layout) identifier for `seed`.
pub fn fake_uid(seed: &str) -> String {
    let hi = mix64(fnv1a64(seed.as_bytes()));
    let lo = mix64(fnv1a64(format!("{seed}/uid").as_bytes()));
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Compact JSON with object keys sorted, so equal templates hash equally whatever the key
/// order in the input.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                if let Some(val) = m.get(k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, val) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(val, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn safe_encode_of_digits_matches_kubernetes() {
        // Real pod-template-hash values only use these characters.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn template_hash_ignores_key_order() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {}});
        let b = json!({"spec": {}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        let c = json!({"spec": {}, "metadata": {"labels": {"b": "3", "a": "1"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&c));
        let h = template_hash(&a);
        assert!((1..=10).contains(&h.len()));
        assert!(h.bytes().all(|b| b"456789bcdf".contains(&b)));
    }

    #[test]
    fn suffixes_are_deterministic_and_safe() {
        let s = random_suffix("Deployment/default/web/0");
        assert_eq!(s, random_suffix("Deployment/default/web/0"));
        assert_ne!(s, random_suffix("Deployment/default/web/1"));
        assert_eq!(s.len(), SUFFIX_LEN);
        assert!(s.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }

    #[test]
    fn generate_name_truncates_prefix() {
        let long = "a".repeat(80);
        let n = generate_name(&long, "x");
        assert_eq!(n.len(), MAX_GENERATE_NAME_PREFIX + SUFFIX_LEN);
        assert!(n.starts_with(&"a".repeat(58)));
        let short = generate_name("web-", "x");
        assert!(short.starts_with("web-") && short.len() == 9);
    }

    #[test]
    fn fake_uid_is_uuid_shaped() {
        let u = fake_uid("Job/default/pi");
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(u, fake_uid("Job/default/pi"));
        assert_ne!(u, fake_uid("Job/default/pj"));
    }
}
