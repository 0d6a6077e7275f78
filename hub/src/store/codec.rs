//! Compact encoding of a record's relations for staging: kind byte + 32-byte pseudonym each.

use matchpoint_schemas::{Relation, RelationKind};

fn kind_byte(k: RelationKind) -> u8 {
    match k {
        RelationKind::Parent => 1,
        RelationKind::Child => 2,
        RelationKind::HouseholdMember => 3,
    }
}

/// Encodes relations as `kind ‖ pseudonym` entries.
pub fn encode_relations(rels: &[Relation]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rels.len() * 33);
    for r in rels {
        out.push(kind_byte(r.kind));
        out.extend_from_slice(r.other.as_bytes());
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
