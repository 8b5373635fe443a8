//! Argument parsing into typed requests, with the uniform errors of `crate::error`.

pub use crate::storage::arg::Arg;

use crate::error::CacheError;

/// A strict Redis-style decimal integer: optional `-`, digits, nothing else.
pub fn parse_int(b: &[u8]) -> Result<i64, CacheError> {
    let s = std::str::from_utf8(b).map_err(|_| CacheError::NotInteger)?;
    if s.starts_with('+') || s.len() > 20 {
        return Err(CacheError::NotInteger);
    }
    s.parse::<i64>().map_err(|_| CacheError::NotInteger)
}

/// A time in ms that must be > 0 (`PX`, `LEASE`, `WAIT`).
pub fn parse_positive_ms(b: &[u8], opt: &'static str) -> Result<i64, CacheError> {
    match parse_int(b)? {
        n if n > 0 => Ok(n),
        _ => Err(CacheError::InvalidTime(opt)),
    }
}

/// A time in ms that may be 0 (`GRACE`, `DELTA`).
pub fn parse_nonneg_ms(b: &[u8], opt: &'static str) -> Result<i64, CacheError> {
    match parse_int(b)? {
        n if n >= 0 => Ok(n),
        _ => Err(CacheError::InvalidTime(opt)),
    }
}

/// `EX` seconds, returned as ms.
pub fn parse_ex(b: &[u8]) -> Result<i64, CacheError> {
    parse_positive_ms(b, "EX")?
        .checked_mul(1000)
        .ok_or(CacheError::InvalidTime("EX"))
}

/// `BETA`: a finite decimal > 0.
pub fn parse_beta(b: &[u8]) -> Result<f64, CacheError> {
    let s = std::str::from_utf8(b).map_err(|_| CacheError::InvalidBeta)?;
    // Rust's parser accepts "inf", "nan" and "infinity": refuse anything not finite.
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && s.trim() == s => Ok(v),
        _ => Err(CacheError::InvalidBeta),
    }
}

/// `TOKEN`: a positive integer as issued by the server.
pub fn parse_token(b: &[u8]) -> Result<u64, CacheError> {
    match parse_int(b) {
        Ok(n) if n > 0 => Ok(n as u64),
        _ => Err(CacheError::InvalidToken),
    }
}

/// Walks `OPTION value` pairs, matching option names case-insensitively and refusing repeats.
pub struct Options<'a> {
    rest: &'a [Arg],
    seen: u32,
}

impl<'a> Options<'a> {
    pub fn new(rest: &'a [Arg]) -> Options<'a> {
        Options { rest, seen: 0 }
    }

    /// The next option name (one of `known`, at most 32) and its value. Options of one group
    /// (`EX` and `PX`) exclude each other.
    pub fn next(
        &mut self,
        known: &[&'static str],
    ) -> Result<Option<(&'static str, &'a [u8])>, CacheError> {
        let Some((name, rest)) = self.rest.split_first() else {
            return Ok(None);
        };
        let name = name.as_slice();
        let index = known
            .iter()
            .position(|k| k.as_bytes().eq_ignore_ascii_case(name))
            .ok_or(CacheError::Syntax)?;
        let opt = known[index];
        let (value, rest) = rest.split_first().ok_or(CacheError::Syntax)?;
        let group = group_of(opt);
        // One bit per group: the first option of the group in `known` names it.
        let bit = 1u32
            << known
                .iter()
                .position(|k| group_of(k) == group)
                .unwrap_or(index);
        if self.seen & bit != 0 {
            return Err(CacheError::Repeated(group));
        }
        self.seen |= bit;
        self.rest = rest;
        Ok(Some((opt, value.as_slice())))
    }
}

/// Options that exclude each other share a group name.
fn group_of(opt: &'static str) -> &'static str {
    match opt {
        "EX" | "PX" => "EX/PX",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_int(b"42"), Ok(42));
        assert_eq!(parse_int(b"-7"), Ok(-7));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"0x10",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(parse_int(bad), Err(CacheError::NotInteger), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_positive_ms(b"0", "PX"),
            Err(CacheError::InvalidTime("PX"))
        );
        assert_eq!(
            parse_positive_ms(b"-5", "PX"),
            Err(CacheError::InvalidTime("PX"))
        );
        assert_eq!(parse_nonneg_ms(b"0", "GRACE"), Ok(0));
        assert_eq!(parse_ex(b"2"), Ok(2000));
        assert_eq!(
            parse_ex(b"9223372036854775807"),
            Err(CacheError::InvalidTime("EX"))
        );
    }

    #[test]
    fn beta_must_be_positive_and_finite() {
        assert_eq!(parse_beta(b"1"), Ok(1.0));
        assert_eq!(parse_beta(b"0.5"), Ok(0.5));
        for bad in [
            &b"0"[..],
            b"-1",
            b"nan",
            b"inf",
            b"-inf",
            b"infinity",
            b"",
            b"x",
            b" 1",
            b"1e999",
        ] {
            assert_eq!(parse_beta(bad), Err(CacheError::InvalidBeta), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_positive() {
        assert_eq!(parse_token(b"5"), Ok(5));
        assert_eq!(parse_token(b"0"), Err(CacheError::InvalidToken));
        assert_eq!(parse_token(b"-5"), Err(CacheError::InvalidToken));
        assert_eq!(parse_token(b"abc"), Err(CacheError::InvalidToken));
    }
}
