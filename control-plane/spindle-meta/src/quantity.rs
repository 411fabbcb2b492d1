//! Kubernetes resource quantities ("500m", "1.5Gi", "2e3", "128974848") as one exact value
//! type, parsed, compared and rounded as apimachinery's `resource.Quantity` does.
//!
//! A quantity is `<sign><digits>[.<digits>]<suffix>` where the suffix is a binary SI
//! suffix (Ki … Ei), a decimal SI suffix (n u m "" k M G T P E) or a decimal exponent
//! (`e3`, `E-2`). Like apimachinery, parsing rounds away from zero to a whole nano-unit
//! ("if you want some resources, you should get some"), a binary-SI value is capped at
//! 2^63-1 units, and conversions to millis or whole units round up, so a request is never
//! under-counted. The value is kept as an `i128` count of nano-units, so comparisons are
//! exact: `1Gi == 1024Mi`, and `1.5Gi` is greater than `1610612735`; only beyond about
//! 1.7e29 units (far past any resource) does the value saturate.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError(pub String);

/// How a quantity was written, which decides how it is written back (apimachinery's
/// `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// "500m", "1k", "2G": powers of 1000 (and plain numbers).
    DecimalSI,
    /// "1Ki", "1.5Gi": powers of 1024.
    BinarySI,
    /// "1e3", "5E-1": a decimal exponent.
    DecimalExponent,
}

/// One nano-unit per unit.
const NANO: i128 = 1_000_000_000;
/// apimachinery caps a binary-SI quantity at this many units.
const MAX_BINARY_NANOS: i128 = i64::MAX as i128 * NANO;

/// An exact resource quantity. Equality, ordering and hashing are by value, whatever the
/// spelling: `"1Gi"`, `"1024Mi"` and `"1073741824"` are the same quantity.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parse the Kubernetes spelling of a quantity.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let p = parse(s)?;
        let format = if p.exp2 > 0 {
            Format::BinarySI
        } else if p.exponent_suffix {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        };
        let mut nanos = scaled(&p, 9);
        if format == Format::BinarySI {
            nanos = nanos.clamp(-MAX_BINARY_NANOS, MAX_BINARY_NANOS);
        }
        Ok(Quantity { nanos, format })
    }

    /// `units` whole units (bytes, cores, pods), written in `format`.
    pub fn from_value(units: i64, format: Format) -> Quantity {
        Quantity {
            nanos: i128::from(units) * NANO,
            format,
        }
    }

    /// `millis` thousandths of a unit (CPU millicores), written in decimal SI.
    pub fn from_millis(millis: i64) -> Quantity {
        Quantity {
            nanos: i128::from(millis) * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// `nanos` billionths of a unit (CPU nanocores, as metrics-server reports them),
    /// written in decimal SI.
    pub fn from_nanos(nanos: i64) -> Quantity {
        Quantity {
            nanos: i128::from(nanos),
            format: Format::DecimalSI,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The exact value in nano-units (apimachinery's finest precision).
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The quantity in thousandths of a unit, rounded up (CPU millicores; Go's
    /// `MilliValue`), saturating at the bounds of i64.
    pub fn as_millis(&self) -> i64 {
        to_i64(div_away(self.nanos, 1_000_000))
    }

    /// The quantity in whole units, rounded up (memory bytes, pods, extended resources;
    /// Go's `Value`), saturating at the bounds of i64.
    pub fn value(&self) -> i64 {
        to_i64(div_away(self.nanos, NANO))
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The sum, saturating; keeps this quantity's format (as Go's `Add`).
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }

    /// The difference, saturating; keeps this quantity's format (as Go's `Sub`).
    pub fn saturating_sub(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }
}

/// `n / d` rounded away from zero.
fn div_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n < 0 {
        q - 1
    } else {
        q + 1
    }
}

fn to_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity {
            nanos: 0,
            format: Format::DecimalSI,
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;

    fn try_from(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Self::Error> {
        Quantity::parse(&q.0)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: Quantity) -> Self {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_string())
    }
}

/// The canonical spelling, as apimachinery's `String()`: the largest suffix that keeps
/// the number whole ("1536Mi" for 1.5Gi, "500m" for 0.5, "1" for 1000m).
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let whole_units = abs.is_multiple_of(NANO as u128);
        // Binary SI only for whole numbers of at least 1024 units; anything else is
        // written in decimal SI so that no precision is lost.
        if self.format == Format::BinarySI && whole_units && abs >= 1024 * NANO as u128 {
            let mut units = abs / NANO as u128;
            let mut power = 0;
            while power < 6 && units.is_multiple_of(1024) {
                units /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{sign}{units}{suffix}");
        }
        // Largest power of 1000 (from nano up to exa) that divides the value.
        let mut mantissa = abs;
        let mut exp = -9;
        let cap = if self.format == Format::DecimalExponent {
            i32::MAX
        } else {
            18
        };
        while exp < cap && mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exp {
                0 => write!(f, "{sign}{mantissa}"),
                e => write!(f, "{sign}{mantissa}e{e}"),
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The JSON form is a string; a bare number is accepted too, as apimachinery does.
impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Number(serde_json::Number),
        }
        let text = match Repr::deserialize(d)? {
            Repr::Text(s) => s,
            Repr::Number(n) => n.to_string(),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A parsed quantity: `±mantissa * 10^exp10 * 2^exp2`, plus whether non-zero digits were
/// dropped below the mantissa (so the true value is slightly larger in magnitude).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    mantissa: i128,
    exp10: i32,
    exp2: u32,
    /// Non-zero digits beyond i128 precision were dropped.
    sticky: bool,
    /// The suffix was a decimal exponent (`e3`), not an SI suffix.
    exponent_suffix: bool,
}

fn parse(s: &str) -> Result<Parsed, QuantityError> {
    let err = || QuantityError(s.to_string());
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
    let mut p = Parsed {
        negative,
        mantissa: 0,
        exp10: 0,
        exp2: 0,
        sticky: false,
        exponent_suffix: false,
    };
    read_digits(num, &mut p);
    match suffix {
        "" => {}
        "Ki" => p.exp2 = 10,
        "Mi" => p.exp2 = 20,
        "Gi" => p.exp2 = 30,
        "Ti" => p.exp2 = 40,
        "Pi" => p.exp2 = 50,
        "Ei" => p.exp2 = 60,
        "n" => p.exp10 -= 9,
        "u" => p.exp10 -= 6,
        "m" => p.exp10 -= 3,
        "k" => p.exp10 += 3,
        "M" => p.exp10 += 6,
        "G" => p.exp10 += 9,
        "T" => p.exp10 += 12,
        "P" => p.exp10 += 15,
        "E" => p.exp10 += 18,
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
            p.exp10 = p.exp10.checked_add(e).ok_or_else(err)?;
            p.exponent_suffix = true;
        }
    }
    Ok(p)
}

/// Accumulate the digits of `num` (digits and at most one point) into `p`.
fn read_digits(num: &str, p: &mut Parsed) {
    let mut after_point = false;
    let mut full = false;
    for c in num.chars() {
        if c == '.' {
            after_point = true;
            continue;
        }
        let d = i128::from(c as u8 - b'0');
        let next = match full {
            true => None,
            false => p.mantissa.checked_mul(10).and_then(|m| m.checked_add(d)),
        };
        match next {
            Some(m) => {
                p.mantissa = m;
                if after_point {
                    p.exp10 = p.exp10.saturating_sub(1);
                }
            }
            None => {
                // Beyond i128 precision: an integer digit still scales the value by ten
                // (it saturates later anyway); a dropped non-zero digit makes the value
                // a little larger, which the rounding up honours.
                full = true;
                p.sticky |= d != 0;
                if !after_point {
                    p.exp10 = p.exp10.saturating_add(1);
                }
            }
        }
    }
}

/// `p * 10^shift`, rounded away from zero, saturating at the bounds of i128.
fn scaled(p: &Parsed, shift: i32) -> i128 {
    let mut v: i128 = p.mantissa;
    // Apply the binary multiplier first while it is still exact.
    for _ in 0..p.exp2 {
        v = v.saturating_mul(2);
    }
    let mut e = p.exp10.saturating_add(shift);
    while e > 0 && v != 0 && v != i128::MAX {
        v = v.saturating_mul(10);
        e -= 1;
    }
    let mut round_up = p.sticky;
    if e < 0 {
        if e < -38 {
            round_up |= v != 0;
            v = 0;
        } else {
            let d = 10i128.pow(e.unsigned_abs());
            round_up |= v % d != 0;
            v /= d;
        }
    }
    if round_up {
        v = v.saturating_add(1);
    }
    if p.negative {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests;
