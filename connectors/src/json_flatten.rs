//! JSON objects → field paths and repeated groups, for JSON kinds (REST/JSON, FHIR).
//!
//! - nested objects become dotted paths: `{"client": {"bsn": "1"}}` → `client.bsn = 1`;
//! - strings are taken as they are; numbers and booleans as their JSON text; `null` is absent;
//! - an array of objects at record level is a repeated group named by its path
//!   (`relations`), each element flattened relative to the group;
//! - an array of scalars gives the same path once per value, in order;
//! - arrays inside a group element are flattened with their index: `telecom.0.value`.
//!
//! Nesting deeper than `max_depth` is an error (the record goes to quarantine), so is a
//! record with more than `max_fields` values.
//!
//! Objects are flattened in the order of their member names (the order a
//! `serde_json::Value` keeps). [`flatten`] works on a `Value`; the REST/JSON decoder also
//! flattens records straight from the parser (`RecordSeed`), with members in any order,
//! which gives the same result without building the tree.

use matchpoint_schemas::RawGroup;
use serde_json::Value;

/// Limits of one flattened record.
#[derive(Debug, Clone, Copy)]
pub struct FlattenLimits {
    /// Deepest nesting of objects/arrays.
    pub max_depth: usize,
    /// Most values (fields of the record and of all its groups).
    pub max_fields: usize,
}

impl Default for FlattenLimits {
    fn default() -> Self {
        FlattenLimits {
            max_depth: 16,
            max_fields: 10_000,
        }
    }
}

/// A flattened object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flat {
    /// Path → value.
    pub fields: Vec<(String, String)>,
    /// Arrays of objects at record level.
    pub groups: Vec<RawGroup>,
}

impl Flat {
    /// The first value at `path`.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an object could not be flattened (never contains a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlattenError {
    /// Not a JSON object.
    #[error("the record is not a JSON object")]
    NotAnObject,
    /// Too deep.
    #[error("the record nests deeper than {0} levels (limits.max_depth)")]
    TooDeep(usize),
    /// Too many values.
    #[error("the record holds more than {0} values")]
    TooManyFields(usize),
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Walker {
    limits: FlattenLimits,
    count: usize,
}

impl Walker {
    fn push(
        &mut self,
        out: &mut Vec<(String, String)>,
        path: String,
        v: String,
    ) -> Result<(), FlattenError> {
        self.count += 1;
        if self.count > self.limits.max_fields {
            return Err(FlattenError::TooManyFields(self.limits.max_fields));
        }
        out.push((path, v));
        Ok(())
    }

    /// Flattens `v` at `path` into `out`; at record level arrays of objects go to `groups`.
    fn walk(
        &mut self,
        path: &str,
        v: &Value,
        depth: usize,
        out: &mut Vec<(String, String)>,
        groups: Option<&mut Vec<RawGroup>>,
    ) -> Result<(), FlattenError> {
        if depth > self.limits.max_depth {
            return Err(FlattenError::TooDeep(self.limits.max_depth));
        }
        match v {
            Value::Null => Ok(()),
            Value::Object(map) => {
                let mut groups = groups;
                for (k, child) in map {
                    self.walk(&join(path, k), child, depth + 1, out, groups.as_deref_mut())?;
                }
                Ok(())
            }
            Value::Array(items) => match groups {
                Some(groups) if items.iter().any(Value::is_object) => {
                    for item in items {
                        let mut fields = Vec::new();
                        if item.is_object() {
                            self.walk("", item, depth + 1, &mut fields, None)?;
                        } else if let Some(s) = scalar(item) {
                            self.push(&mut fields, String::new(), s)?;
                        }
                        groups.push(RawGroup {
                            path: path.to_owned(),
                            fields,
                        });
                    }
                    Ok(())
                }
                Some(_) => {
                    for item in items {
                        if let Some(s) = scalar(item) {
                            self.push(out, path.to_owned(), s)?;
                        } else if depth + 1 > self.limits.max_depth {
                            return Err(FlattenError::TooDeep(self.limits.max_depth));
                        }
                    }
                    Ok(())
                }
                None => {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(&join(path, &i.to_string()), item, depth + 1, out, None)?;
                    }
                    Ok(())
                }
            },
            other => match scalar(other) {
                Some(s) => self.push(out, path.to_owned(), s),
                None => Ok(()),
            },
        }
    }
}

/// Flattens one JSON object (a record).
pub fn flatten(value: &Value, limits: FlattenLimits) -> Result<Flat, FlattenError> {
    if !value.is_object() {
        return Err(FlattenError::NotAnObject);
    }
    let mut w = Walker { limits, count: 0 };
    let mut flat = Flat::default();
    w.walk("", value, 0, &mut flat.fields, Some(&mut flat.groups))?;
    Ok(flat)
}

/// One record read by [`RecordSeed`].
#[derive(Debug)]
pub(crate) enum Streamed {
    /// An object, flattened, with its id member (`id_field`) when that is a string or a
    /// number.
    Object { flat: Flat, id: Option<String> },
    /// Anything but an object.
    NotAnObject,
}

/// The reason the streaming flattener hands a page back to the `Value` path: never shown.
const FALLBACK: &str = "take the Value path";

/// Flattens one record straight from the deserializer, without a `Value` tree, with the
/// result [`flatten`] gives, whatever order the members of its objects come in: each
/// object's members are flattened as they come, and when they did not come in ascending
/// order, the fields (and groups) they gave are put in the order of their names, which is
/// how a `serde_json::Value` (a sorted map) iterates them. A member name given twice in one
/// object (`Value` keeps the last) or a limit hit makes it fail, and the caller decodes the
/// page through [`flatten`] instead, so such records keep their exact result. Arrays are
/// read into a small `Value` and flattened by the same walker as [`flatten`] (whether an
/// array is a group depends on all its elements).
pub(crate) struct RecordSeed<'a> {
    /// Limits of one record.
    pub limits: FlattenLimits,
    /// Top-level member holding the record id.
    pub id_field: &'a str,
    /// Buffers reused from record to record (one per page).
    pub scratch: &'a mut Scratch,
}

/// Buffers of [`RecordSeed`], kept from one record to the next so that ordering the
/// members of an object allocates nothing once they have grown.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The names of the members of the objects being read, back to back.
    keys: String,
    /// The members of the objects being read, the innermost object's last.
    members: Vec<Member>,
    /// Fields of an object being put in order.
    fields: Vec<(String, String)>,
    /// Groups of an object being put in order.
    groups: Vec<RawGroup>,
}

/// One member of an object being read: its name (in [`Scratch::keys`]) and the fields and
/// groups its value gave.
#[derive(Debug, Clone)]
struct Member {
    key: std::ops::Range<usize>,
    fields: std::ops::Range<usize>,
    groups: std::ops::Range<usize>,
}

struct Stream<'a> {
    walker: Walker,
    id_field: &'a str,
    path: String,
    flat: Flat,
    id: Option<String>,
    scratch: &'a mut Scratch,
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Streamed;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Streamed, D::Error> {
        d.deserialize_any(RecordVisitor(self))
    }
}

struct RecordVisitor<'a>(RecordSeed<'a>);

impl<'de> serde::de::Visitor<'de> for RecordVisitor<'_> {
    type Value = Streamed;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Streamed, A::Error> {
        let RecordSeed {
            limits,
            id_field,
            scratch,
        } = self.0;
        scratch.keys.clear();
        scratch.members.clear();
        let mut st = Stream {
            walker: Walker { limits, count: 0 },
            id_field,
            path: String::new(),
            flat: Flat::default(),
            id: None,
            scratch,
        };
        st.object(map, 0)?;
        Ok(Streamed::Object {
            flat: st.flat,
            id: st.id,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Streamed, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Streamed::NotAnObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }

    fn visit_unit<E>(self) -> Result<Streamed, E> {
        Ok(Streamed::NotAnObject)
    }
}

/// A member name, appended to a path as it is read (no `String` per name).
struct KeySeed<'p>(&'p mut String);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

impl Stream<'_> {
    /// The members of an object at `depth` (its path is `self.path`), in any order.
    fn object<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        mut map: A,
        depth: usize,
    ) -> Result<(), A::Error> {
        use serde::de::Error;
        if depth > self.walker.limits.max_depth {
            return Err(A::Error::custom(FALLBACK));
        }
        let base = self.scratch.members.len();
        let keys_base = self.scratch.keys.len();
        let mut ascending = true;
        loop {
            let len = self.path.len();
            if len > 0 {
                self.path.push('.');
            }
            let name = self.path.len();
            if map.next_key_seed(KeySeed(&mut self.path))?.is_none() {
                self.path.truncate(len);
                break;
            }
            let key = &self.path[name..];
            let sc = &mut *self.scratch;
            if ascending
                && sc.members.len() > base
                && let Some(prev) = sc.members.last()
                && key <= &sc.keys[prev.key.clone()]
            {
                ascending = false;
            }
            let k = sc.keys.len();
            sc.keys.push_str(key);
            let (f, g) = (self.flat.fields.len(), self.flat.groups.len());
            sc.members.push(Member {
                key: k..sc.keys.len(),
                fields: f..f,
                groups: g..g,
            });
            let at = sc.members.len() - 1;
            let is_id = depth == 0 && key == self.id_field;
            map.next_value_seed(MemberSeed {
                st: self,
                depth: depth + 1,
                is_id,
            })?;
            self.path.truncate(len);
            // Nested objects have taken their members off the stack again.
            let m = &mut self.scratch.members[at];
            m.fields.end = self.flat.fields.len();
            m.groups.end = self.flat.groups.len();
        }
        if !ascending && !self.in_order(base) {
            return Err(A::Error::custom(FALLBACK));
        }
        self.scratch.members.truncate(base);
        self.scratch.keys.truncate(keys_base);
        Ok(())
    }

    /// Puts the fields and groups of the members `base..` of the object just read (all at
    /// the end of `self.flat`) in the order of their names; `false` when a name is given
    /// twice.
    fn in_order(&mut self, base: usize) -> bool {
        let Scratch {
            keys,
            members,
            fields,
            groups,
        } = &mut *self.scratch;
        let members = &mut members[base..];
        let Some(first) = members.first() else {
            return true;
        };
        let (f0, g0) = (first.fields.start, first.groups.start);
        members.sort_unstable_by(|a, b| keys[a.key.clone()].cmp(&keys[b.key.clone()]));
        if members
            .windows(2)
            .any(|w| keys[w[0].key.clone()] == keys[w[1].key.clone()])
        {
            return false;
        }
        let flat = &mut self.flat;
        fields.clear();
        fields.extend(flat.fields.drain(f0..));
        for m in members.iter() {
            flat.fields.extend(
                fields[m.fields.start - f0..m.fields.end - f0]
                    .iter_mut()
                    .map(std::mem::take),
            );
        }
        fields.clear();
        if flat.groups.len() > g0 {
            groups.clear();
            groups.extend(flat.groups.drain(g0..));
            for m in members.iter() {
                flat.groups.extend(
                    groups[m.groups.start - g0..m.groups.end - g0]
                        .iter_mut()
                        .map(|g| RawGroup {
                            path: std::mem::take(&mut g.path),
                            fields: std::mem::take(&mut g.fields),
                        }),
                );
            }
            groups.clear();
        }
        true
    }

    fn scalar<E: serde::de::Error>(
        &mut self,
        depth: usize,
        is_id: bool,
        value: String,
    ) -> Result<(), E> {
        if depth > self.walker.limits.max_depth {
            return Err(E::custom(FALLBACK));
        }
        if is_id {
            self.id = Some(value.clone());
        }
        self.walker
            .push(&mut self.flat.fields, self.path.clone(), value)
            .map_err(|_| E::custom(FALLBACK))
    }
}

struct MemberSeed<'s, 'a> {
    st: &'s mut Stream<'a>,
    depth: usize,
    is_id: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for MemberSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MemberSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.st.object(map, self.depth)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        use serde::de::{Deserialize, Error};
        let items = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        let Stream {
            walker, path, flat, ..
        } = self.st;
        walker
            .walk(
                path,
                &items,
                self.depth,
                &mut flat.fields,
                Some(&mut flat.groups),
            )
            .map_err(|_| A::Error::custom(FALLBACK))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.st.scalar(self.depth, self.is_id, v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.st.scalar(self.depth, self.is_id, v)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        // A boolean is never an id.
        self.st.scalar(self.depth, false, v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.st.scalar(self.depth, self.is_id, v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.st.scalar(self.depth, self.is_id, v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // As `Value` keeps it (JSON has no NaN or infinity).
        match serde_json::Number::from_f64(v) {
            Some(n) => self.st.scalar(self.depth, self.is_id, n.to_string()),
            None => self.visit_unit(),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        if self.depth > self.st.walker.limits.max_depth {
            return Err(E::custom(FALLBACK));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_become_dotted_paths_and_arrays_of_objects_groups() {
        let v = json!({
            "id": "R1",
            "client": {"bsn": "123456782", "age": 7, "shielded": false, "note": null},
            "tags": ["a", "b"],
            "relations": [
                {"bsn": "1", "kind": "ouder", "telecom": [{"value": "x"}]},
                {"bsn": "2", "kind": "kind"}
            ]
        });
        let f = flatten(&v, FlattenLimits::default()).unwrap();
        assert_eq!(f.field("id"), Some("R1"));
        assert_eq!(f.field("client.bsn"), Some("123456782"));
        assert_eq!(f.field("client.age"), Some("7"));
        assert_eq!(f.field("client.shielded"), Some("false"));
        assert_eq!(f.field("client.note"), None);
        let tags: Vec<_> = f.fields.iter().filter(|(p, _)| p == "tags").collect();
        assert_eq!(tags.len(), 2);
        assert_eq!(f.groups.len(), 2);
        assert_eq!(f.groups[0].path, "relations");
        assert_eq!(f.groups[0].field("kind"), Some("ouder"));
        assert_eq!(f.groups[0].field("telecom.0.value"), Some("x"));
        assert_eq!(f.groups[1].field("bsn"), Some("2"));
    }

    #[test]
    fn limits_and_non_objects_are_errors() {
        assert_eq!(
            flatten(&json!([1]), FlattenLimits::default()),
            Err(FlattenError::NotAnObject)
        );
        let deep = json!({"a": {"b": {"c": {"d": 1}}}});
        let lim = FlattenLimits {
            max_depth: 2,
            max_fields: 10,
        };
        assert_eq!(flatten(&deep, lim), Err(FlattenError::TooDeep(2)));
        let wide = json!({"a": 1, "b": 2, "c": 3});
        let lim = FlattenLimits {
            max_depth: 5,
            max_fields: 2,
        };
        assert_eq!(flatten(&wide, lim), Err(FlattenError::TooManyFields(2)));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON value flattens without panicking; every scalar of an object without
        /// arrays is found at its dotted path.
        #[test]
        fn flatten_never_panics(v in arb_json()) {
            let _ = flatten(&v, FlattenLimits { max_depth: 4, max_fields: 50 });
        }

        #[test]
        fn flat_objects_round_trip(m in prop::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,6}", 0..8)) {
            let v = json!({"outer": m.clone()});
            let f = flatten(&v, FlattenLimits::default()).unwrap();
            prop_assert_eq!(f.fields.len(), m.len());
            for (k, val) in &m {
                let path = format!("outer.{k}");
                prop_assert_eq!(f.field(&path), Some(val.as_str()));
            }
        }
    }
}
