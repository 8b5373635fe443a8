//! The events of a write-behind queue, as `CACHE.WBQUEUE` and `CACHE.WBDEL` write them: stream
//! entries with fields `op` (`set` or `del`), `key`, `value` (absent for `del`), `version`
//! (decimal, below 2^53) and `ms` (server time of the write).

use std::fmt;

/// Versions are below 2^53 by contract, so they fit a 64-bit signed column and a double.
pub const VERSION_LIMIT: u64 = 1 << 53;

/// One stream entry as read, fields kept as they came, so a poison event can be dead-lettered
/// with exactly its original fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A parsed event; `value` is `None` exactly for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub version: u64,
    pub ms: u64,
}

impl Event {
    pub fn deleted(&self) -> bool {
        self.value.is_none()
    }
}

/// Why an entry is not a valid event; it is poison and goes to the dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    Missing(&'static str),
    Repeated(String),
    BadOp(String),
    BadNumber(&'static str, String),
    VersionTooLarge(u64),
    ValueOnDelete,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Missing(field) => write!(f, "bad event: no `{field}` field"),
            ParseError::Repeated(field) => write!(f, "bad event: `{field}` given twice"),
            ParseError::BadOp(op) => write!(f, "bad event: op `{op}` is neither set nor del"),
            ParseError::BadNumber(field, text) => {
                write!(f, "bad event: `{field}` is not a decimal u64: `{text}`")
            }
            ParseError::VersionTooLarge(v) => {
                write!(f, "bad event: version {v} is not below 2^53")
            }
            ParseError::ValueOnDelete => write!(f, "bad event: a del carries a value"),
        }
    }
}

impl std::error::Error for ParseError {}

fn decimal(field: &'static str, bytes: &[u8]) -> Result<u64, ParseError> {
    let bad = || ParseError::BadNumber(field, String::from_utf8_lossy(bytes).into_owned());
    // u64::from_str would take a leading '+'; the contract's numbers are plain digits.
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

impl StreamEntry {
    /// Parses the entry's fields into an event. Unknown fields are ignored, so the module may
    /// add fields later without stopping older workers.
    pub fn parse(&self) -> Result<Event, ParseError> {
        let mut op = None;
        let mut key = None;
        let mut value = None;
        let mut version = None;
        let mut ms = None;
        for (name, content) in &self.fields {
            let slot = match name.as_slice() {
                b"op" => &mut op,
                b"key" => &mut key,
                b"value" => &mut value,
                b"version" => &mut version,
                b"ms" => &mut ms,
                _ => continue,
            };
            if slot.replace(content).is_some() {
                return Err(ParseError::Repeated(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
        }
        let deleted = match op.ok_or(ParseError::Missing("op"))?.as_slice() {
            b"set" => false,
            b"del" => true,
            other => return Err(ParseError::BadOp(String::from_utf8_lossy(other).into())),
        };
        let key = key.ok_or(ParseError::Missing("key"))?.clone();
        let version = decimal("version", version.ok_or(ParseError::Missing("version"))?)?;
        if version >= VERSION_LIMIT {
            return Err(ParseError::VersionTooLarge(version));
        }
        let ms = decimal("ms", ms.ok_or(ParseError::Missing("ms"))?)?;
        // `updated_ms` is a signed 64-bit column.
        if ms > i64::MAX as u64 {
            return Err(ParseError::BadNumber("ms", ms.to_string()));
        }
        let value = match (deleted, value) {
            (false, Some(v)) => Some(v.clone()),
            (false, None) => return Err(ParseError::Missing("value")),
            (true, None) => None,
            (true, Some(_)) => return Err(ParseError::ValueOnDelete),
        };
        Ok(Event {
            key,
            value,
            version,
            ms,
        })
    }
}

#[cfg(test)]
pub fn entry(id: &str, fields: &[(&str, &[u8])]) -> StreamEntry {
    StreamEntry {
        id: id.to_string(),
        fields: fields
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.to_vec()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_set_and_a_del() {
        let set = entry(
            "1-0",
            &[
                ("key", b"k\0"),
                ("value", b"v"),
                ("version", b"42"),
                ("ms", b"1700000000000"),
                ("op", b"set"),
            ],
        );
        assert_eq!(
            set.parse(),
            Ok(Event {
                key: b"k\0".to_vec(),
                value: Some(b"v".to_vec()),
                version: 42,
                ms: 1_700_000_000_000,
            })
        );
        let del = entry(
            "2-0",
            &[
                ("op", b"del"),
                ("key", b"k"),
                ("version", b"43"),
                ("ms", b"5"),
            ],
        );
        let event = del.parse().unwrap();
        assert!(event.deleted());
        assert_eq!(event.version, 43);
    }

    #[test]
    fn an_empty_value_is_a_value() {
        let e = entry(
            "1-0",
            &[
                ("op", b"set"),
                ("key", b""),
                ("value", b""),
                ("version", b"1"),
                ("ms", b"0"),
            ],
        );
        assert_eq!(e.parse().unwrap().value, Some(vec![]));
    }

    #[test]
    fn ignores_unknown_fields() {
        let e = entry(
            "1-0",
            &[
                ("op", b"del"),
                ("key", b"k"),
                ("version", b"1"),
                ("ms", b"0"),
                ("x", b"y"),
            ],
        );
        assert!(e.parse().is_ok());
    }

    type Fields<'a> = Vec<(&'a str, &'a [u8])>;

    #[test]
    fn refuses_what_is_not_the_contract() {
        let base: Fields = vec![
            ("op", b"set"),
            ("key", b"k"),
            ("value", b"v"),
            ("version", b"1"),
            ("ms", b"0"),
        ];
        let without =
            |name: &str| -> Fields { base.iter().filter(|(f, _)| *f != name).cloned().collect() };
        let with = |name: &'static str, v: &'static [u8]| -> Fields {
            let mut f = without(name);
            f.push((name, v));
            f
        };
        let cases: Vec<(Fields, ParseError)> = vec![
            (without("op"), ParseError::Missing("op")),
            (without("key"), ParseError::Missing("key")),
            (without("value"), ParseError::Missing("value")),
            (without("version"), ParseError::Missing("version")),
            (without("ms"), ParseError::Missing("ms")),
            (with("op", b"SET"), ParseError::BadOp("SET".into())),
            (
                with("version", b"-1"),
                ParseError::BadNumber("version", "-1".into()),
            ),
            (
                with("version", b"+1"),
                ParseError::BadNumber("version", "+1".into()),
            ),
            (
                with("version", b""),
                ParseError::BadNumber("version", "".into()),
            ),
            (
                with("version", b"1.5"),
                ParseError::BadNumber("version", "1.5".into()),
            ),
            (
                with("version", b"99999999999999999999"),
                ParseError::BadNumber("version", "99999999999999999999".into()),
            ),
            (
                with("version", b"9007199254740992"),
                ParseError::VersionTooLarge(1 << 53),
            ),
            (with("ms", b"x"), ParseError::BadNumber("ms", "x".into())),
            (
                with("ms", b"9223372036854775808"),
                ParseError::BadNumber("ms", "9223372036854775808".into()),
            ),
            (with("op", b"del"), ParseError::ValueOnDelete),
        ];
        for (fields, expected) in cases {
            let e = entry("1-0", &fields);
            assert_eq!(e.parse(), Err(expected), "{fields:?}");
        }
        let mut twice = base.clone();
        twice.push(("key", b"other"));
        assert_eq!(
            entry("1-0", &twice).parse(),
            Err(ParseError::Repeated("key".into()))
        );
        // The largest version the contract allows is taken.
        let top = with("version", b"9007199254740991");
        assert_eq!(entry("1-0", &top).parse().unwrap().version, (1 << 53) - 1);
    }
}
