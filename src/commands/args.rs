//! Argument parsing into typed requests, with the uniform errors of `crate::error`.
//!
//! Every command's parser is generic over [`ArgBytes`]: the server hands it `Arg`s (argv,
//! borrowed, no copy), the property tests and the fuzz targets (`fuzz/`) plain byte strings.

use crate::core::entry::MAX_SPAN_MS;
use crate::core::number;
use crate::storage::arg::Arg;

use crate::error::CacheError;

/// What a parser reads of an argument: its bytes. Implemented by `Arg` (Redis's argv) and by
/// byte strings, so that every command's parsing runs without a server.
pub trait ArgBytes {
    fn bytes(&self) -> &[u8];
}

impl ArgBytes for Arg {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

impl ArgBytes for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl ArgBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// The one argument of a command that takes exactly one (`CACHE.GET key`, `CACHE.TAGCOUNT
/// tag`); `cmd` names the command in the arity error.
pub fn parse_one<'a, A: ArgBytes>(args: &'a [A], cmd: &'static str) -> Result<&'a A, CacheError> {
    match args {
        [_, one] => Ok(one),
        _ => Err(CacheError::Arity(cmd)),
    }
}

/// The arguments of a command that takes one or more of a kind (`CACHE.DEL key [key ...]`);
/// `cmd` names the command in the arity error.
pub fn parse_some<'a, A: ArgBytes>(
    args: &'a [A],
    cmd: &'static str,
) -> Result<&'a [A], CacheError> {
    match args {
        [_, some @ ..] if !some.is_empty() => Ok(some),
        _ => Err(CacheError::Arity(cmd)),
    }
}

/// A decimal integer exactly as core Redis reads one (see `core::number`).
pub fn parse_int(b: &[u8]) -> Result<i64, CacheError> {
    number::parse_i64(b).ok_or(CacheError::NotInteger)
}

/// A time in ms that must be > 0 (`PX`, `LEASE`, `WAIT`).
pub fn parse_positive_ms(b: &[u8], opt: &'static str) -> Result<i64, CacheError> {
    match parse_int(b)? {
        n if n > 0 => Ok(n),
        _ => Err(CacheError::InvalidTime(opt)),
    }
}

/// A span in ms that may be 0, up to what an entry stores (`GRACE`, `DELTA`: 32 bits, about
/// 49.7 days).
pub fn parse_span_ms(b: &[u8], opt: &'static str) -> Result<i64, CacheError> {
    match parse_int(b)? {
        n if (0..=MAX_SPAN_MS).contains(&n) => Ok(n),
        n if n >= 0 => Err(CacheError::SpanTooLong(opt)),
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
    number::parse_beta(b).ok_or(CacheError::InvalidBeta)
}

/// `TOKEN`: a positive integer as issued by the server.
pub fn parse_token(b: &[u8]) -> Result<u64, CacheError> {
    match parse_int(b) {
        Ok(n) if n > 0 => Ok(n as u64),
        _ => Err(CacheError::InvalidToken),
    }
}

/// The options one command takes, as an enum: each command matches on it exhaustively, so an
/// option that is known but not handled does not compile.
pub trait OptionName: Copy + 'static {
    /// Every option, in the order errors name them.
    const ALL: &'static [Self];
    /// The option's word on the command line (matched case-insensitively).
    fn word(self) -> &'static str;
    /// Options that exclude each other (`EX`, `PX`) share a group, named in the error.
    fn group(self) -> &'static str {
        self.word()
    }
}

/// Walks `OPTION value` pairs, matching option names case-insensitively and refusing repeats
/// (and two options of one group).
pub struct Options<'a, A> {
    rest: &'a [A],
    /// One bit per group given so far: the bit of the group's first option in `O::ALL` (a
    /// command has far fewer than 64 options). No allocation on the write path.
    seen: u64,
}

impl<'a, A: ArgBytes> Options<'a, A> {
    pub fn new(rest: &'a [A]) -> Options<'a, A> {
        Options { rest, seen: 0 }
    }

    /// The next option and its value.
    pub fn next_option<O: OptionName>(&mut self) -> Result<Option<(O, &'a [u8])>, CacheError> {
        let Some((name, rest)) = self.rest.split_first() else {
            return Ok(None);
        };
        let name = name.bytes();
        let index = O::ALL
            .iter()
            .position(|o| o.word().as_bytes().eq_ignore_ascii_case(name))
            .ok_or(CacheError::Syntax)?;
        let opt = O::ALL[index];
        let (value, rest) = rest.split_first().ok_or(CacheError::Syntax)?;
        let group = opt.group();
        let first = O::ALL
            .iter()
            .position(|o| o.group() == group)
            .unwrap_or(index);
        let bit = 1u64 << first;
        if self.seen & bit != 0 {
            return Err(CacheError::Repeated(group));
        }
        self.seen |= bit;
        self.rest = rest;
        Ok(Some((opt, value.bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_span_ms(b"0", "GRACE"), Ok(0));
        assert_eq!(parse_span_ms(b"4294967295", "GRACE"), Ok(4294967295));
        assert_eq!(
            parse_span_ms(b"4294967296", "DELTA"),
            Err(CacheError::SpanTooLong("DELTA"))
        );
        assert_eq!(
            parse_span_ms(b"-1", "GRACE"),
            Err(CacheError::InvalidTime("GRACE"))
        );
        assert_eq!(parse_ex(b"2"), Ok(2000));
        assert_eq!(
            parse_ex(b"9223372036854775807"),
            Err(CacheError::InvalidTime("EX"))
        );
    }

    #[test]
    fn tokens_are_positive() {
        assert_eq!(parse_token(b"5"), Ok(5));
        assert_eq!(parse_token(b"0"), Err(CacheError::InvalidToken));
        assert_eq!(parse_token(b"-5"), Err(CacheError::InvalidToken));
        assert_eq!(parse_token(b"abc"), Err(CacheError::InvalidToken));
    }
}
