//! Compact encoding of a record's relations for staging: kind byte + 32-byte pseudonym each.

use matchpoint_schemas::{Relation, RelationKind};

fn kind_byte(k: RelationKind) -> u8 {
    match k {
        RelationKind::Parent => 1,
        RelationKind::Child => 2,
        RelationKind::HouseholdMember => 3,
    }
}

/// Encodes relations as `kind ‖ pseudonym` entries, each distinct entry once (the stores
/// rely on it: a relation is stored once per record).
pub fn encode_relations(rels: &[Relation]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(rels.len() * 33);
    for r in rels {
        let mut entry = [0u8; 33];
        entry[0] = kind_byte(r.kind);
        entry[1..].copy_from_slice(r.other.as_bytes());
        if !out.chunks_exact(33).any(|c| c == entry) {
            out.extend_from_slice(&entry);
        }
    }
    out
}

/// Decodes what [`encode_relations`] wrote into (kind code, pseudonym bytes).
pub fn decode_relations(bytes: &[u8]) -> Vec<(&'static str, [u8; 32])> {
    bytes
        .chunks_exact(33)
        .filter_map(|c| {
            let kind = match c[0] {
                1 => RelationKind::Parent,
                2 => RelationKind::Child,
                3 => RelationKind::HouseholdMember,
                _ => return None,
            };
            let mut p = [0u8; 32];
            p.copy_from_slice(&c[1..]);
            Some((kind.as_str(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use matchpoint_schemas::{Bsn, KeyPurpose, MasterKey};

    #[test]
    fn each_distinct_relation_is_encoded_once_and_decodes_back() {
        let key = MasterKey::from_secret("k1", &[7; 32]).expect("key");
        let pseudonymiser = key.pseudonymiser(KeyPurpose::Index);
        let p = |bsn: &str| pseudonymiser.pseudonymise(&Bsn::parse(bsn).expect("valid BSN"));
        let (a, b) = (p("111222333"), p("123456782"));
        let rel = |kind, other| Relation { kind, other };
        let rels = [
            rel(RelationKind::Parent, a),
            rel(RelationKind::Parent, a),
            rel(RelationKind::Child, a),
            rel(RelationKind::HouseholdMember, b),
            rel(RelationKind::Child, a),
        ];
        let encoded = encode_relations(&rels);
        assert_eq!(encoded.len(), 3 * 33);
        assert_eq!(
            decode_relations(&encoded),
            vec![
                ("parent", *a.as_bytes()),
                ("child", *a.as_bytes()),
                ("household_member", *b.as_bytes())
            ]
        );
    }
}
