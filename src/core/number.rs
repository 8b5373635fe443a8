//! The numbers of the command line, read as core Redis reads them: integers exactly as
//! `string2ll` accepts them (so `PX 0100` is refused as core `SET` refuses it), and `BETA`, a
//! finite decimal above zero.

/// A decimal 64-bit integer: an optional `-`, then digits without leading zeros (`0` itself
/// is fine, `-0` is not), nothing else (no `+`, no spaces), within `i64`.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate as a negative number: i64::MIN has no positive counterpart.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// `BETA`: a finite decimal > 0, as Rust reads floats but without the words it also accepts
/// (`inf`, `nan`, `infinity`) and without surrounding spaces.
pub fn parse_beta(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.trim() != s {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What Redis's string2ll accepts, said another way: the canonical decimal form of an i64.
    fn reference(b: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(b).ok()?;
        let n: i64 = s.parse().ok()?;
        (n.to_string() == s).then_some(n)
    }

    #[test]
    fn integers_are_read_as_core_redis_reads_them() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"0x10",
            b"0100",
            b"00",
            b"-0",
            b"-01",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn beta_must_be_positive_and_finite() {
        assert_eq!(parse_beta(b"1"), Some(1.0));
        assert_eq!(parse_beta(b"0.5"), Some(0.5));
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
            assert_eq!(parse_beta(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_canonical_form_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            prop_assert_eq!(parse_i64(&b), reference(&b));
        }

        #[test]
        fn agrees_on_digit_strings(s in "-?[0-9]{0,21}") {
            prop_assert_eq!(parse_i64(s.as_bytes()), reference(s.as_bytes()));
        }

        #[test]
        fn every_i64_reads_back(n in any::<i64>()) {
            prop_assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
        }
    }
}
