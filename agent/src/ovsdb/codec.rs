//! Wire format: framing JSON-RPC messages out of a byte stream (ovsdb-server
//! sends no delimiter, so we parse incrementally) and the RFC 7047 encoding of
//! atoms, sets and maps.

use serde_json::{json, Value};

use super::{OvsdbError, Result};

/// Largest message buffered before we call the peer broken.
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Splits a byte stream into JSON values. Feed bytes with [`push`](Self::push),
/// take complete messages with [`next_message`](Self::next_message).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a complete message yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Value>> {
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match stream.next() {
            None => {
                // only whitespace so far
                self.buf.clear();
                Ok(None)
            }
            Some(Ok(value)) => {
                let used = stream.byte_offset();
                self.buf.drain(..used);
                if !value.is_object() {
                    return Err(OvsdbError::Protocol(format!(
                        "expected a JSON-RPC object, got {value}"
                    )));
                }
                Ok(Some(value))
            }
            Some(Err(e)) if e.is_eof() => {
                if self.buf.len() > MAX_FRAME {
                    return Err(OvsdbError::Protocol(format!(
                        "message larger than {MAX_FRAME} bytes"
                    )));
                }
                Ok(None)
            }
            Some(Err(e)) => Err(OvsdbError::Protocol(format!(
                "malformed JSON from server: {e}"
            ))),
        }
    }
}

/// One OVSDB atom.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    /// A row reference `["uuid", "..."]`.
    Uuid(String),
    /// A reference to a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    pub fn uuid(u: impl Into<String>) -> Self {
        Self::Uuid(u.into())
    }

    pub fn named(n: impl Into<String>) -> Self {
        Self::NamedUuid(n.into())
    }

    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        match v {
            Value::String(s) => Ok(Atom::String(s.clone())),
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| OvsdbError::Decode(format!("number out of range: {n}"))),
            },
            Value::Array(a) => match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("uuid"), Some(Value::String(u)), 2) => Ok(Atom::Uuid(u.clone())),
                (Some("named-uuid"), Some(Value::String(u)), 2) => Ok(Atom::NamedUuid(u.clone())),
                _ => Err(OvsdbError::Decode(format!("not an atom: {v}"))),
            },
            _ => Err(OvsdbError::Decode(format!("not an atom: {v}"))),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) | Atom::Uuid(s) | Atom::NamedUuid(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_string())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}

/// A column value: a set of atoms (a scalar is a one-element set) or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

impl Datum {
    /// A scalar value (encoded as a bare atom).
    pub fn atom(a: impl Into<Atom>) -> Self {
        Datum::Set(vec![a.into()])
    }

    pub fn set<I: IntoIterator<Item = A>, A: Into<Atom>>(items: I) -> Self {
        Datum::Set(items.into_iter().map(Into::into).collect())
    }

    pub fn empty_set() -> Self {
        Datum::Set(Vec::new())
    }

    pub fn map<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Datum::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn uuid(u: impl Into<String>) -> Self {
        Datum::Set(vec![Atom::Uuid(u.into())])
    }

    pub fn named_uuid(n: impl Into<String>) -> Self {
        Datum::Set(vec![Atom::NamedUuid(n.into())])
    }

    /// RFC 7047 encoding: a one-element set is written as its bare atom.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(items) if items.len() == 1 => items[0].to_json(),
            Datum::Set(items) => {
                json!(["set", items.iter().map(Atom::to_json).collect::<Vec<_>>()])
            }
            Datum::Map(pairs) => json!([
                "map",
                pairs
                    .iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        if let Value::Array(a) = v {
            match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("set"), Some(Value::Array(items)), 2) => {
                    return Ok(Datum::Set(
                        items.iter().map(Atom::from_json).collect::<Result<_>>()?,
                    ))
                }
                (Some("map"), Some(Value::Array(pairs)), 2) => {
                    let mut out = Vec::with_capacity(pairs.len());
                    for p in pairs {
                        match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => out.push((Atom::from_json(k)?, Atom::from_json(v)?)),
                            _ => return Err(OvsdbError::Decode(format!("bad map pair: {p}"))),
                        }
                    }
                    return Ok(Datum::Map(out));
                }
                _ => {}
            }
        }
        Ok(Datum::Set(vec![Atom::from_json(v)?]))
    }

    /// The single atom of a scalar (or an optional value that is set).
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Datum::Set(items) if items.len() == 1 => items.first(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_i64)
    }

    /// The atoms of a set (empty for a map).
    pub fn atoms(&self) -> &[Atom] {
        match self {
            Datum::Set(items) => items,
            Datum::Map(_) => &[],
        }
    }

    /// A string→string map (non-string entries are skipped).
    pub fn string_map(&self) -> std::collections::BTreeMap<String, String> {
        match self {
            Datum::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            Datum::Set(_) => Default::default(),
        }
    }
}

impl From<Atom> for Datum {
    fn from(v: Atom) -> Self {
        Datum::atom(v)
    }
}

impl From<&str> for Datum {
    fn from(v: &str) -> Self {
        Datum::atom(v)
    }
}

impl From<String> for Datum {
    fn from(v: String) -> Self {
        Datum::atom(v)
    }
}

impl From<i64> for Datum {
    fn from(v: i64) -> Self {
        Datum::atom(v)
    }
}

impl From<bool> for Datum {
    fn from(v: bool) -> Self {
        Datum::atom(v)
    }
}

impl serde::Serialize for Datum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn replies() -> Vec<u8> {
        br#"{"id":1,"result":["Open_vSwitch","_Server"],"error":null}{"id":null,"method":"update","params":["m",{"Bridge":{"0b1e":{"new":{"name":"br{0}","ports":["set",[]]}}}}]}"#.to_vec()
    }

    #[test]
    fn frames_a_reply_split_at_every_byte() {
        let bytes = replies();
        let whole: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        for cut in 0..=bytes.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            d.push(&bytes[..cut]);
            while let Some(v) = d.next_message().unwrap() {
                got.push(v);
            }
            d.push(&bytes[cut..]);
            while let Some(v) = d.next_message().unwrap() {
                got.push(v);
            }
            assert_eq!(got, whole, "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn frames_byte_by_byte_and_two_in_one_read() {
        let bytes = replies();
        let mut d = FrameDecoder::new();
        let mut n = 0;
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            while d.next_message().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 2);

        let mut d = FrameDecoder::new();
        d.push(&bytes);
        assert_eq!(d.next_message().unwrap().unwrap()["id"], 1);
        assert_eq!(d.next_message().unwrap().unwrap()["method"], "update");
        assert!(d.next_message().unwrap().is_none());
    }

    #[test]
    fn tolerates_whitespace_and_rejects_garbage() {
        let mut d = FrameDecoder::new();
        d.push(b"  \n{\"id\":2}\n ");
        assert_eq!(d.next_message().unwrap().unwrap()["id"], 2);
        assert!(d.next_message().unwrap().is_none());
        d.push(b"}{");
        assert!(matches!(d.next_message(), Err(OvsdbError::Protocol(_))));
        let mut d = FrameDecoder::new();
        d.push(b"[1]");
        assert!(matches!(d.next_message(), Err(OvsdbError::Protocol(_))));
    }

    #[test]
    fn encodes_sets_maps_and_uuids() {
        assert_eq!(Datum::atom("br0").to_json(), json!("br0"));
        assert_eq!(Datum::empty_set().to_json(), json!(["set", []]));
        assert_eq!(
            Datum::set([Atom::uuid("a"), Atom::named("b")]).to_json(),
            json!(["set", [["uuid", "a"], ["named-uuid", "b"]]])
        );
        assert_eq!(Datum::named_uuid("p").to_json(), json!(["named-uuid", "p"]));
        assert_eq!(
            Datum::map([("peer", "patch-b")]).to_json(),
            json!(["map", [["peer", "patch-b"]]])
        );
        assert_eq!(Datum::atom(7i64).to_json(), json!(7));
    }

    #[test]
    fn decodes_bare_and_wrapped_forms() {
        let one = Datum::from_json(&json!(["uuid", "u1"])).unwrap();
        let wrapped = Datum::from_json(&json!(["set", [["uuid", "u1"]]])).unwrap();
        assert_eq!(one, wrapped);
        assert_eq!(one.as_str(), Some("u1"));
        assert_eq!(
            Datum::from_json(&json!(["set", []])).unwrap().as_atom(),
            None
        );
        assert_eq!(Datum::from_json(&json!(3)).unwrap().as_i64(), Some(3));
        let m = Datum::from_json(&json!(["map", [["peer", "x"], ["k", "v"]]])).unwrap();
        assert_eq!(m.string_map().get("peer").map(String::as_str), Some("x"));
        assert_eq!(
            Datum::from_json(&json!(["map", []])).unwrap(),
            Datum::Map(vec![])
        );
        // a plain string that happens to say "set" is a string atom
        assert_eq!(Datum::from_json(&json!("set")).unwrap(), Datum::atom("set"));
        for v in [
            json!({"a": 1}),
            json!(["uuid"]),
            json!(["map", [["k"]]]),
            json!(null),
        ] {
            assert!(Datum::from_json(&v).is_err(), "{v}");
        }
        // round trip
        for d in [
            Datum::set(["a", "b"]),
            Datum::map([("a", "1")]),
            Datum::atom(true),
            Datum::empty_set(),
        ] {
            assert_eq!(Datum::from_json(&d.to_json()).unwrap(), d);
        }
    }
}
