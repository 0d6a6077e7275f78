//! A light JSON tree for decoding one Bundle page: strings borrowed from the body where
//! they need no unescaping, objects as member lists instead of maps.
//!
//! It answers the questions the decoder asks (`get`, `as_str`, `as_array`, …) exactly as a
//! `serde_json::Value` would: a member given twice is found by its last occurrence (a
//! `Value` object keeps the last), numbers are told apart the same way. Building it costs a
//! fraction of a `Value` tree (no map nodes, no copy of most strings); lookups scan the few
//! members of an object.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value, borrowing from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer (what `Value::as_u64` gives).
    PosInt(u64),
    /// A negative integer.
    NegInt(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object's members in document order.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Parses a whole document (trailing whitespace only), like `serde_json::from_slice`.
    pub fn parse(text: &'a [u8]) -> Result<Node<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let mut scratch = Scratch::default();
        let node = NodeSeed(&mut scratch).deserialize(&mut de)?;
        de.end()?;
        Ok(node)
    }

    /// The member `key` of an object (its last occurrence); `None` for anything else.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Array(items) => Some(items.as_slice()),
            _ => None,
        }
    }

    /// The number, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Node::PosInt(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }
}

/// A string that stays borrowed when the text allows it (object keys).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Members and elements of the objects and arrays being read, as one stack each: a
/// finished object or array takes its own off the top into a vector of exactly its size, so
/// each costs one allocation instead of one per doubling.
struct Scratch<'de> {
    members: Vec<(Cow<'de, str>, Node<'de>)>,
    items: Vec<Node<'de>>,
}

impl Default for Scratch<'_> {
    fn default() -> Self {
        Scratch {
            members: Vec::with_capacity(64),
            items: Vec::with_capacity(64),
        }
    }
}

/// Reads one value with the shared [`Scratch`].
struct NodeSeed<'s, 'de>(&'s mut Scratch<'de>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::PosInt(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        // As `serde_json::Value`: a non-negative i64 is a PosInt.
        Ok(match u64::try_from(v) {
            Ok(u) => Node::PosInt(u),
            Err(_) => Node::NegInt(v),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let start = self.0.items.len();
        while let Some(item) = seq.next_element_seed(NodeSeed(self.0))? {
            self.0.items.push(item);
        }
        Ok(Node::Array(self.0.items.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let start = self.0.members.len();
        while let Some(Key(k)) = map.next_key()? {
            let v = map.next_value_seed(NodeSeed(self.0))?;
            self.0.members.push((k, v));
        }
        Ok(Node::Object(self.0.members.drain(start..).collect()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// What `Value` says about a path of keys, and what `Node` says.
    fn same_answers(text: &str, keys: &[&str]) {
        let v: Value = serde_json::from_str(text).expect("value");
        let n = Node::parse(text.as_bytes()).expect("node");
        let (mut v, mut n) = (Some(&v), Some(&n));
        for key in keys {
            assert_eq!(v.map(Value::as_str), n.map(Node::as_str), "{text} {keys:?}");
            assert_eq!(v.map(Value::as_u64), n.map(Node::as_u64), "{text} {keys:?}");
            assert_eq!(v.map(Value::is_object), n.map(Node::is_object));
            assert_eq!(
                v.and_then(Value::as_array).map(Vec::len),
                n.and_then(Node::as_array).map(<[Node]>::len)
            );
            v = v.and_then(|v| v.get(*key));
            n = n.and_then(|n| n.get(key));
        }
        assert_eq!(v.is_some(), n.is_some(), "{text} {keys:?}");
    }

    #[test]
    fn answers_are_those_of_a_value() {
        same_answers(r#"{"a": 1, "a": {"b": "x\n"}, "c": -2}"#, &["a", "b"]);
        same_answers(r#"{"a": 1.5, "t": 18446744073709551615}"#, &["t"]);
        same_answers(r#"{"a": -0, "b": 0}"#, &["a"]);
        same_answers(r#"{"a": -0, "b": 0}"#, &["b"]);
        same_answers(r#"[1, 2]"#, &["a"]);
        same_answers(r#"{"k\u00e9y": "v\"", "x": null}"#, &["k\u{e9}y"]);
    }

    proptest! {
        /// Any text: `Node` parses exactly when `Value` does.
        #[test]
        fn parses_exactly_what_value_parses(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let v = serde_json::from_slice::<Value>(&bytes).is_ok();
            let n = Node::parse(&bytes).is_ok();
            prop_assert_eq!(v, n);
        }

        /// Objects with repeated and nested members answer as `Value` does.
        #[test]
        fn lookups_match(members in prop::collection::vec(("[ab]", "(1|-1|\"s\"|\\{\"a\": 2\\}|null|true)"), 0..5)) {
            let m: Vec<String> = members.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
            let text = format!("{{{}}}", m.join(", "));
            same_answers(&text, &["a", "a"]);
            same_answers(&text, &["b"]);
        }
    }
}
