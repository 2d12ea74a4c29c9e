//! Partition and volume sizes as the seeds write them: `512M`, `2G`, `1.5T`,
//! a plain byte count, or `remaining` (the rest of the disk).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, or everything that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Bytes(u64),
    Remaining,
}

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: use a number with a unit K, M, G or T (powers of 1024), such as \"512M\" or \"2G\", or \"remaining\"")]
    Invalid(String),
    #[error("size {0:?} is larger than any disk: at most 1048576T (1 EiB)")]
    TooLarge(String),
}

impl Size {
    /// The largest size accepted: 1 EiB. Far beyond any disk, and small
    /// enough that a few of them add up without overflowing u64.
    pub const MAX_BYTES: u64 = 1 << 60;

    fn checked(bytes: u64, text: &str) -> Result<Size, SizeError> {
        match bytes {
            0 => Err(SizeError::Invalid(text.to_string())),
            b if b > Size::MAX_BYTES => Err(SizeError::TooLarge(text.to_string())),
            b => Ok(Size::Bytes(b)),
        }
    }
}

const UNITS: [(char, u64); 5] = [
    ('B', 1),
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
];

impl FromStr for Size {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SizeError::Invalid(s.to_string());
        let t = s.trim();
        if t.eq_ignore_ascii_case("remaining") {
            return Ok(Size::Remaining);
        }
        // Accept "2G", "2GB", "2GiB", "2g".
        let upper = t.to_ascii_uppercase();
        let core = upper
            .strip_suffix("IB")
            .or_else(|| {
                upper.strip_suffix('B').filter(|c| {
                    !c.is_empty() && c.chars().last().is_some_and(|l| l.is_ascii_alphabetic())
                })
            })
            .unwrap_or(&upper);
        let (num, mult) = match core.chars().last() {
            Some(c) if c.is_ascii_alphabetic() => {
                let m = UNITS.iter().find(|(u, _)| *u == c).ok_or_else(err)?.1;
                (&core[..core.len() - 1], m)
            }
            Some(_) => (core, 1),
            None => return Err(err()),
        };
        if num.is_empty() || num.starts_with('-') || num.starts_with('+') {
            return Err(err());
        }
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| err())?
            };
            if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let scale = 10u64.pow(frac.len() as u32);
            let frac: u64 = frac.parse().map_err(|_| err())?;
            int.checked_mul(mult)
                .and_then(|a| {
                    frac.checked_mul(mult)
                        .and_then(|b| a.checked_add(b / scale))
                })
                .ok_or_else(|| SizeError::TooLarge(s.to_string()))?
        } else {
            let n: u64 = num.parse().map_err(|_| {
                if num.bytes().all(|b| b.is_ascii_digit()) {
                    SizeError::TooLarge(s.to_string())
                } else {
                    err()
                }
            })?;
            n.checked_mul(mult)
                .ok_or_else(|| SizeError::TooLarge(s.to_string()))?
        };
        Size::checked(bytes, s)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Size::Remaining => f.write_str("remaining"),
            Size::Bytes(b) => {
                for (u, m) in UNITS.iter().rev() {
                    if *m > 1 && b % m == 0 {
                        return write!(f, "{}{}", b / m, u);
                    }
                }
                write!(f, "{b}")
            }
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512M\", \"2G\" or \"remaining\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Size::checked(n, &n.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(SizeError::Invalid(n.to_string())))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Size with a binary unit (512M, 2G, 1.5T), a byte count, or \"remaining\"",
            "anyOf": [
                { "type": "string", "pattern": "^(?i)(remaining|[0-9]+(\\.[0-9]{1,6})?\\s*([KMGT](i?B)?|B)?)$" },
                { "type": "integer", "minimum": 1 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_sizes() {
        assert_eq!("512M".parse(), Ok(Size::Bytes(512 << 20)));
        assert_eq!("2G".parse(), Ok(Size::Bytes(2 << 30)));
        assert_eq!("2GiB".parse(), Ok(Size::Bytes(2 << 30)));
        assert_eq!("1.5T".parse(), Ok(Size::Bytes(3 << 39)));
        assert_eq!("remaining".parse(), Ok(Size::Remaining));
        assert_eq!("4096".parse(), Ok(Size::Bytes(4096)));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "M", "-1G", "0", "2X", "1.G", "G2", "99999999999T"] {
            assert!(bad.parse::<Size>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rejects_sizes_larger_than_any_disk() {
        assert_eq!("1048576T".parse(), Ok(Size::Bytes(1 << 60)));
        for bad in ["1048577T", "18446744073709551615", "1152921504606846977"] {
            let err = bad.parse::<Size>().expect_err(bad);
            assert!(
                err.to_string().contains("larger than any disk"),
                "{bad}: {err}"
            );
        }
        let err =
            serde_json::from_str::<Size>("18446744073709551615").expect_err("u64::MAX accepted");
        assert!(err.to_string().contains("larger than any disk"), "{err}");
        assert_eq!(
            serde_json::from_str::<Size>("1152921504606846976").expect("1 EiB"),
            Size::Bytes(1 << 60)
        );
    }

    #[test]
    fn displays_in_largest_exact_unit() {
        assert_eq!(Size::Bytes(512 << 20).to_string(), "512M");
        assert_eq!(Size::Bytes(1 << 30).to_string(), "1G");
        assert_eq!(Size::Bytes(1000).to_string(), "1000");
    }
}
