//! Names apimachinery generates and durations written as Go writes them.

use std::time::Duration;

/// apimachinery's alphabet for random name suffixes: no vowels (no words by chance) and
/// no look-alikes such as 0/o, 1/l, 3/e.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated suffix.
const SUFFIX_LEN: usize = 5;
/// The longest object name a generated name must fit in (a DNS label).
const MAX_NAME_LEN: usize = 63;

/// Five random characters from apimachinery's alphabet ("x7k2q").
pub fn random_suffix() -> String {
    (0..SUFFIX_LEN)
        .map(|_| ALPHANUMS[rand::random_range(0..ALPHANUMS.len())] as char)
        .collect()
}

/// `metadata.generateName` made into a name, as apimachinery's `SimpleNameGenerator`:
/// the base cut to 58 bytes (so the result fits 63) and a random suffix appended.
pub fn generate_name(base: &str) -> String {
    let mut cut = base.len().min(MAX_NAME_LEN - SUFFIX_LEN);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &base[..cut], random_suffix())
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

/// The longest duration Go represents (`time.Duration` is an i64 of nanoseconds).
const MAX_GO_NANOS: f64 = i64::MAX as f64;

/// A Go duration ("1m30s", "300ms", "1.5h"), as `time.ParseDuration` reads it, through
/// kube-core's parser. Negative durations and durations beyond Go's ~292 years are
/// errors (a flag or field with such a value is a mistake, never a wish).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if s.is_empty() {
        return Err(err("empty"));
    }
    // kube-core multiplies each number by its unit without bounds; refuse out-of-range
    // numbers first so that no input can make it overflow.
    if !within_go_range(s) {
        return Err(err("out of range"));
    }
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e: kube::core::duration::ParseError| err(&e.to_string()))?;
    if d.is_negative() {
        return Err(err("negative"));
    }
    Ok(d.into())
}

/// Whether the sum of `<number><unit>` pieces stays within Go's range (anything that is
/// not such a piece is left for the parser to refuse).
fn within_go_range(s: &str) -> bool {
    let mut rest = s.trim_start_matches(['+', '-']);
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            // Not a duration at all: the parser reports it.
            _ => return true,
        };
        let Ok(n) = num.parse::<f64>() else {
            return true;
        };
        total += n * nanos_per_unit;
        if !total.is_finite() || total > MAX_GO_NANOS {
            return false;
        }
        rest = tail;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_use_the_apimachinery_alphabet() {
        for _ in 0..200 {
            let s = random_suffix();
            assert_eq!(s.len(), 5);
            assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)), "{s}");
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| random_suffix()).collect();
        assert!(distinct.len() > 40, "suffixes are random: {distinct:?}");
    }

    #[test]
    fn generated_names_fit_a_dns_label() {
        let name = generate_name("web-");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        let long = "a".repeat(80);
        let name = generate_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"a".repeat(58)));
        // A multi-byte character at the cut is not split.
        let name = generate_name(&format!("{}é", "a".repeat(57)));
        assert_eq!(name.len(), 62);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_errors() {
        for bad in ["", "abc", "5", "1x", "1d", "-5s", "s", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for huge in ["99999999999999999999999h", "1e400h", "3000000h", "106751d"] {
            assert!(parse_duration(huge).is_err(), "{huge:?} should be refused");
        }
        assert!(
            parse_duration("2562047h").is_ok(),
            "Go's largest whole hours"
        );
    }
}
