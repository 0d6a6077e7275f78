//! Keyed pseudonyms: HMAC-SHA256 under a purpose-specific subkey.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::bsn::Bsn;
use crate::keys::{KeyId, KeyPurpose};

type HmacSha256 = Hmac<Sha256>;

/// A person's pseudonym: 32 bytes of HMAC-SHA256. Only a [`Pseudonymiser`] can make one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; 32]);

impl Pseudonym {
    /// The raw bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, for display to operators (never the BSN).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({}…)", &hex::encode(&self.0[..6]))
    }
}

/// Makes pseudonyms for one purpose under one key version. The HMAC key schedule is prepared
/// once and cloned per call (see PERF-NOTES: 7.3 M/s per core).
#[derive(Clone)]
pub struct Pseudonymiser {
    key_id: KeyId,
    tag: &'static [u8],
    mac: HmacSha256,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Pseudonymiser {
    pub(crate) fn new(key_id: KeyId, purpose: KeyPurpose, subkey: &[u8; 32]) -> Self {
        let tag: &'static [u8] = match purpose {
            KeyPurpose::Index => b"matchpoint:index:bsn:",
            KeyPurpose::Audit => b"matchpoint:audit:bsn:",
            KeyPurpose::Quarantine => b"matchpoint:quarantine:bsn:",
            KeyPurpose::AuditCheckpoint => b"matchpoint:audit-checkpoint:bsn:",
        };
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = match HmacSha256::new_from_slice(subkey) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        Pseudonymiser { key_id, tag, mac }
    }

    /// The key version stored beside every pseudonym made here.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// HMAC-SHA256(subkey, domain tag ‖ BSN digits).
    pub fn pseudonymise(&self, bsn: &Bsn) -> Pseudonym {
        let mut mac = self.mac.clone();
        mac.update(self.tag);
        mac.update(bsn.digits());
        Pseudonym(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bsn::passes_elfproef;
    use crate::keys::MasterKey;
    use proptest::prelude::*;
    use sha2::Digest;

    fn valid_bsn() -> impl Strategy<Value = Bsn> {
        (1u32..1_000_000_000)
            .prop_filter("elfproef", |n| passes_elfproef(*n))
            .prop_map(|n| Bsn::parse(&format!("{n:09}")).expect("valid by filter"))
    }

    proptest! {
        #[test]
        fn pseudonyms_are_deterministic_per_key_and_differ_between_keys_and_subkeys(
            bsn in valid_bsn(),
            k1 in proptest::array::uniform32(any::<u8>()),
            k2 in proptest::array::uniform32(any::<u8>()),
        ) {
            prop_assume!(k1 != k2);
            let a = MasterKey::from_secret("a", &k1).expect("key");
            let b = MasterKey::from_secret("b", &k2).expect("key");
            let idx_a = a.pseudonymiser(KeyPurpose::Index);
            prop_assert_eq!(idx_a.pseudonymise(&bsn), a.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn));
            prop_assert_ne!(idx_a.pseudonymise(&bsn), b.pseudonymiser(KeyPurpose::Index).pseudonymise(&bsn));
            prop_assert_ne!(idx_a.pseudonymise(&bsn), a.pseudonymiser(KeyPurpose::Audit).pseudonymise(&bsn));
            let plain: [u8; 32] = sha2::Sha256::digest(bsn.digits()).into();
            prop_assert_ne!(*idx_a.pseudonymise(&bsn).as_bytes(), plain);
        }

        #[test]
        fn different_bsns_get_different_pseudonyms(a in valid_bsn(), b in valid_bsn()) {
            prop_assume!(a != b);
            let k = MasterKey::from_secret("k", &[7u8; 32]).expect("key");
            let p = k.pseudonymiser(KeyPurpose::Index);
            prop_assert_ne!(p.pseudonymise(&a), p.pseudonymise(&b));
        }
    }
}
