//! Deserialization helpers that keep serde from reading anything but what the file says.
//!
//! - serde's `Option` reads `null` as absent, a silent default: [`some`] refuses `null`;
//! - serde's derived structs also accept a JSON list, field by field in order (so `"user":
//!   [0, 0]` would be uid 0, gid 0): [`object`], [`some_object`] and [`objects`] accept only
//!   JSON objects where a struct is expected.

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::marker::PhantomData;

/// What a struct looks like in JSON, for "expected ..." in errors.
pub(crate) trait Described {
    /// For example "an object with a numeric uid and gid".
    const WHAT: &'static str;
}

/// Implement [`Described`] for types.
macro_rules! described {
    ($($t:ty => $what:expr),* $(,)?) => {
        $(impl $crate::de::Described for $t {
            const WHAT: &'static str = $what;
        })*
    };
}
pub(crate) use described;

/// For `Option` fields: absent (with `#[serde(default)]`) is `None`, a value is `Some`, and
/// `null` is an error, as for every other field.
pub(crate) fn some<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Described> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::WHAT)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A struct, from a JSON object only.
pub(crate) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Described,
{
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// An optional struct: absent is `None`; present, it must be a JSON object.
pub(crate) fn some_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Described,
{
    object(deserializer).map(Some)
}

struct ObjectSeed<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Described> DeserializeSeed<'de> for ObjectSeed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        object(deserializer)
    }
}

struct ObjectsVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Described> Visitor<'de> for ObjectsVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list, each {}", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(ObjectSeed(PhantomData))? {
            out.push(item);
        }
        Ok(out)
    }
}

/// A list of structs, each from a JSON object only.
pub(crate) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Described,
{
    deserializer.deserialize_seq(ObjectsVisitor(PhantomData))
}

/// A whole document: a struct from a JSON object only.
pub(crate) struct Document<T>(pub(crate) T);

impl<'de, T: Deserialize<'de> + Described> Deserialize<'de> for Document<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(deserializer).map(Document)
    }
}
