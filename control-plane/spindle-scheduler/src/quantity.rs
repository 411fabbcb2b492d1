//! Kubernetes resource quantities ("500m", "1.5Gi", "2e3", "128974848") turned into the
//! integers the scheduler compares: CPU in millicores, everything else in whole units.
//!
//! A quantity is `<sign><digits>[.<digits>]<suffix>` where the suffix is a binary SI
//! suffix (Ki … Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent
//! (`e3`, `E-2`). Like apimachinery, conversions round up: "0.1m" CPU is 1 millicore and
//! "0.5" bytes is 1 byte, so a request is never under-counted.

use std::fmt;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quantity {:?}", self.0)
    }
}

impl std::error::Error for QuantityError {}

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`, kept exact until converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

fn parse(s: &str) -> Result<Parsed, QuantityError> {
    let err = || QuantityError(s.to_string());
    let s = s.trim();
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        Some(_) => (false, s),
        None => return Err(err()),
    };
    // Number part: digits with at most one decimal point.
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(err());
    }
    let mut mantissa: i128 = 0;
    let mut exp10: i32 = 0;
    let mut after_point = false;
    for c in num.chars() {
        if c == '.' {
            after_point = true;
            continue;
        }
        let d = i128::from(c as u8 - b'0');
        // Trailing fractional digits beyond i128 precision cannot matter after rounding
        // to millis, but integer digits that overflow are a real error.
        match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
            Some(m) => {
                mantissa = m;
                if after_point {
                    exp10 -= 1;
                }
            }
            None if after_point => break,
            None => return Err(err()),
        }
    }
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        _ => {
            // Decimal exponent: e/E followed by a signed integer ("E" alone is exa, above).
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(err)?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let e: i32 = rest.parse().map_err(|_| err())?;
            exp10 = exp10.checked_add(e).ok_or_else(err)?;
        }
    }
    Ok(Parsed {
        negative,
        mantissa,
        exp10,
        exp2,
    })
}

/// `p * 10^shift`, rounded away from zero (up for positives), saturating at i64 bounds.
fn scaled(p: Parsed, shift: i32) -> i64 {
    let mut v: i128 = p.mantissa;
    let mut e = p.exp10 + shift;
    // Apply the binary multiplier first while it is still exact.
    for _ in 0..p.exp2 {
        v = v.saturating_mul(2);
    }
    while e > 0 && v != 0 {
        v = v.saturating_mul(10);
        e -= 1;
    }
    if e < 0 {
        if e < -38 {
            // Any non-zero value this small still rounds up to one unit.
            v = i128::from(v != 0);
        } else {
            let d = 10i128.pow(e.unsigned_abs());
            v = v / d + i128::from(v % d != 0);
        }
    }
    let v = if p.negative { -v } else { v };
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The quantity in thousandths of a unit, rounded up (CPU millicores).
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    parse(s).map(|p| scaled(p, 3))
}

/// The quantity in whole units, rounded up (memory bytes, pods, extended resources).
pub fn parse_value(s: &str) -> Result<i64, QuantityError> {
    parse(s).map(|p| scaled(p, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_decimal() {
        assert_eq!(parse_value("0"), Ok(0));
        assert_eq!(parse_value("128974848"), Ok(128_974_848));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli("1.25"), Ok(1250));
        assert_eq!(parse_milli("+2"), Ok(2000));
        assert_eq!(parse_milli("-2"), Ok(-2000));
        assert_eq!(parse_milli(".5"), Ok(500));
    }

    #[test]
    fn decimal_si_suffixes() {
        assert_eq!(parse_milli("500m"), Ok(500));
        assert_eq!(parse_milli("250000u"), Ok(250));
        assert_eq!(parse_milli("1n"), Ok(1), "rounds up to one millicore");
        assert_eq!(parse_milli("100000000n"), Ok(100));
        assert_eq!(parse_value("129M"), Ok(129_000_000));
        assert_eq!(parse_value("1k"), Ok(1000));
        assert_eq!(parse_value("2G"), Ok(2_000_000_000));
        assert_eq!(parse_value("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_value("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_value("2E"), Ok(2_000_000_000_000_000_000));
        assert_eq!(parse_value("1500m"), Ok(2), "value rounds up");
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_value("1Ki"), Ok(1024));
        assert_eq!(parse_value("123Mi"), Ok(123 * 1024 * 1024));
        assert_eq!(parse_value("1.5Gi"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_value("1Ti"), Ok(1 << 40));
        assert_eq!(parse_value("1Pi"), Ok(1 << 50));
        assert_eq!(parse_value("1Ei"), Ok(1 << 60));
        assert_eq!(parse_value("64Ei"), Ok(i64::MAX), "saturates");
    }

    #[test]
    fn exponents() {
        assert_eq!(parse_value("129e6"), Ok(129_000_000));
        assert_eq!(parse_value("1E3"), Ok(1000));
        assert_eq!(parse_milli("1e-3"), Ok(1));
        assert_eq!(parse_milli("5E-1"), Ok(500));
        assert_eq!(parse_value("12e+2"), Ok(1200));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1x", "1.2.3", "Mi", "1e", "1e+", "1KiB", "--1", ".",
        ] {
            assert!(parse_value(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
