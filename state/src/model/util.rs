//! Small shapes the seeds use in more than one place: a value that may be one
//! item or a list, and a collection that may be a map or a list.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One value or a list of them (`"address": "10.0.0.1/24"` or a list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() == 1 {
            self.0[0].serialize(s)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(v)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(de::value::U64Deserializer::new(v)).map(|v| OneOrMany(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(de::value::I64Deserializer::new(v)).map(|v| OneOrMany(vec![v]))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let one = g.subschema_for::<T>();
        json_schema!({ "anyOf": [one, { "type": "array", "items": one }] })
    }
}

/// A collection written either as a map keyed by name or as a list of items
/// that carry their own name (the seeds use both for containers).
#[derive(Debug, Clone, PartialEq)]
pub enum MapOrList<M, L> {
    Map(BTreeMap<String, M>),
    List(Vec<L>),
}

impl<M, L> Default for MapOrList<M, L> {
    fn default() -> Self {
        MapOrList::Map(BTreeMap::new())
    }
}

impl<M: Serialize, L: Serialize> Serialize for MapOrList<M, L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MapOrList::Map(m) => m.serialize(s),
            MapOrList::List(l) => l.serialize(s),
        }
    }
}

impl<'de, M: Deserialize<'de>, L: Deserialize<'de>> Deserialize<'de> for MapOrList<M, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<M, L>(PhantomData<(M, L)>);
        impl<'de, M: Deserialize<'de>, L: Deserialize<'de>> Visitor<'de> for V<M, L> {
            type Value = MapOrList<M, L>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map keyed by name or a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<L>::deserialize(SeqAccessDeserializer::new(seq)).map(MapOrList::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                BTreeMap::<String, M>::deserialize(MapAccessDeserializer::new(map))
                    .map(MapOrList::Map)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<M: JsonSchema, L: JsonSchema> JsonSchema for MapOrList<M, L> {
    fn schema_name() -> Cow<'static, str> {
        format!("MapOrList_{}_{}", M::schema_name(), L::schema_name()).into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let m = g.subschema_for::<M>();
        let l = g.subschema_for::<L>();
        json_schema!({
            "anyOf": [
                { "type": "object", "additionalProperties": m },
                { "type": "array", "items": l }
            ]
        })
    }
}

/// What to do with a resource: make it exist, or make it gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}
