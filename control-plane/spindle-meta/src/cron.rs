//! CronJob schedules as Kubernetes reads them: the five-field syntax of kube's cron
//! library (robfig/cron v3 `ParseStandard`: names, ranges, steps, `?`, the `@hourly`
//! family and `@every <duration>`, an optional `TZ=`/`CRON_TZ=` prefix), with its error
//! wording, and the next run time in an IANA time zone.
//!
//! The syntax gate is ours because kube accepts less than general cron crates do (no
//! `L`, `W`, `#`, no weekday 7) and kubectl users see kube's messages. The calendar
//! search, with its month lengths and daylight-saving gaps, is croner's, evaluated in a
//! chrono-tz zone.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a schedule does not parse, in kube's cron library's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A parsed schedule: when it fires, and in which zone its wall clock runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    when: When,
    tz: Tz,
}

#[derive(Debug, Clone)]
enum When {
    Calendar(Box<croner::Cron>),
    /// `@every`: a fixed period in whole seconds.
    Every(i64),
    /// A field that selects no value (`,`): it never fires.
    Never,
}

/// The IANA zone called `name` ("" is UTC, as Go's `time.LoadLocation`), or Go's message
/// "unknown time zone NAME".
pub fn load_time_zone(name: &str) -> Result<Tz, String> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name}"))
}

/// The robfig star bit: the field was `*` or `?` (without a step over 1). Kubernetes
/// matches a day when both day fields match if either is starred, else when either does.
const STAR: u64 = 1 << 63;

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_name: u64,
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    first_name: 0,
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
    first_name: 0,
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    first_name: 0,
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    first_name: 1,
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    first_name: 0,
};

impl Schedule {
    /// Parse `spec` as kube's `cron.ParseStandard` does; the zone is a `TZ=` prefix's, or
    /// UTC.
    pub fn parse(spec: &str) -> Result<Schedule, ScheduleError> {
        Self::parse_in(spec, Tz::UTC)
    }

    /// Parse `spec` with its wall clock in `tz` (a `TZ=` prefix in `spec` wins, as in
    /// kube, which turns `timeZone` into such a prefix).
    pub fn parse_in(spec: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let err = |m: String| Err(ScheduleError(m));
        if spec.is_empty() {
            return err("empty spec string".into());
        }
        let mut spec = spec;
        let mut tz = tz;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            let end = spec.find(' ').unwrap_or(spec.len());
            let name = &spec[eq + 1..end];
            tz = match load_time_zone(name) {
                Ok(tz) => tz,
                Err(e) => return err(format!("provided bad location {name}: {e}")),
            };
            spec = spec[end..].trim();
        }
        if spec.starts_with('@') {
            return Ok(Schedule {
                when: descriptor(spec)?,
                tz,
            });
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let mut bits = [0u64; 5];
        for (i, b) in [&MINUTES, &HOURS, &DOM, &MONTHS, &DOW]
            .into_iter()
            .enumerate()
        {
            bits[i] = field_bits(fields[i], b).map_err(ScheduleError)?;
        }
        Ok(Schedule {
            when: calendar(bits)?,
            tz,
        })
    }

    /// The first time this schedule fires strictly after `after`, at whole seconds as
    /// kube's library counts; `None` when it never does (31 February, or no match in
    /// the years the search covers).
    pub fn next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = Utc.timestamp_opt(after.timestamp(), 0).single()?;
        match &self.when {
            When::Every(secs) => start.checked_add_signed(chrono::TimeDelta::seconds(*secs)),
            When::Never => None,
            When::Calendar(cron) => {
                let mut t = start.with_timezone(&self.tz);
                // croner moves a time that falls in a daylight-saving gap to the gap's
                // end; kube's library skips it. A wall clock that does not match the
                // pattern is such a moved time: look further. (A gap happens at most
                // twice a year, so few rounds.)
                for _ in 0..8 {
                    t = cron.find_next_occurrence(&t, false).ok()?;
                    if cron.is_time_matching(&t).unwrap_or(false) {
                        return Some(t.with_timezone(&Utc));
                    }
                }
                None
            }
        }
    }

    /// The zone the schedule's wall clock runs in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }
}

/// `@yearly` and friends, as robfig's descriptors (case-sensitive).
fn descriptor(spec: &str) -> Result<When, ScheduleError> {
    let all = |b: &Bounds| STAR | range(b.min, b.max, 1);
    let one = |v: u64| 1u64 << v;
    let bits = match spec {
        "@yearly" | "@annually" => [one(0), one(0), one(1), one(1), all(&DOW)],
        "@monthly" => [one(0), one(0), one(1), all(&MONTHS), all(&DOW)],
        "@weekly" => [one(0), one(0), all(&DOM), all(&MONTHS), one(0)],
        "@daily" | "@midnight" => [one(0), one(0), all(&DOM), all(&MONTHS), all(&DOW)],
        "@hourly" => [one(0), all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW)],
        _ => {
            let Some(d) = spec.strip_prefix("@every ") else {
                return Err(ScheduleError(format!("unrecognized descriptor: {spec}")));
            };
            let period = crate::names::parse_duration(d).map_err(|_| {
                ScheduleError(format!(
                    "failed to parse duration {spec}: time: invalid duration {d:?}"
                ))
            })?;
            // robfig: at least a second, in whole seconds.
            return Ok(When::Every(period.as_secs().max(1) as i64));
        }
    };
    calendar(bits)
}

/// The calendar schedule of five fields' bits, handed to croner as plain value lists.
fn calendar(bits: [u64; 5]) -> Result<When, ScheduleError> {
    if bits.iter().any(|b| b & !STAR == 0) {
        return Ok(When::Never);
    }
    // A starred field covers its whole range, so "*" says the same to croner, and
    // croner's day rule (both day fields must match unless one is "*") is kube's.
    let pattern: Vec<String> = bits
        .iter()
        .map(|&b| {
            if b & STAR != 0 {
                "*".to_string()
            } else {
                (0..63)
                    .filter(|i| b & (1 << i) != 0)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        })
        .collect();
    let cron = croner::parser::CronParser::new()
        .parse(&pattern.join(" "))
        .map_err(|e| ScheduleError(e.to_string()))?;
    Ok(When::Calendar(Box::new(cron)))
}

fn range(start: u64, end: u64, step: u64) -> u64 {
    (start..=end)
        .step_by(step as usize)
        .fold(0, |acc, v| acc | (1 << v))
}

/// One field: comma-separated ranges (robfig's `getField`; empty items are skipped).
fn field_bits(field: &str, b: &Bounds) -> Result<u64, String> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .try_fold(0, |acc, expr| Ok(acc | range_bits(expr, b)?))
}

/// `*`, `?`, `N`, `N-M`, each with an optional `/step` (`N/step` runs to the field's
/// maximum), as robfig's `getRange`, with its messages.
fn range_bits(expr: &str, b: &Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut extra);
    if low_high[0] == "*" || low_high[0] == "?" {
        (start, end, extra) = (b.min, b.max, STAR);
    } else {
        start = int_or_name(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(range(start, end, step) | extra)
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u64, String> {
    let lower = expr.to_ascii_lowercase();
    match b.names.iter().position(|n| *n == lower) {
        Some(i) => Ok(b.first_name + i as u64),
        None => parse_int(expr),
    }
}

/// Go's `strconv.Atoi` with robfig's wrapping of its errors.
fn parse_int(expr: &str) -> Result<u64, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    let why = if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        "invalid syntax"
    } else {
        match expr.parse::<i64>() {
            Ok(n) if n < 0 => return Err(format!("negative number ({n}) not allowed: {expr}")),
            Ok(n) => return Ok(n as u64),
            Err(_) => "value out of range",
        }
    };
    Err(format!(
        "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test time")
    }

    fn next(spec: &str, from: &str) -> String {
        Schedule::parse(spec)
            .expect("parses")
            .next(at(from))
            .expect("fires")
            .to_rfc3339()
    }

    fn error(spec: &str) -> String {
        Schedule::parse(spec).expect_err("refused").0
    }

    #[test]
    fn five_fields_with_kube_semantics() {
        assert_eq!(
            next("* * * * *", "2026-12-07T09:30:00Z"),
            "2026-12-07T09:31:00+00:00"
        );
        // Mid-minute: the next whole minute.
        assert_eq!(
            next("* * * * *", "2026-12-07T09:30:59.9Z"),
            "2026-12-07T09:31:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-07T09:30:00Z"),
            "2026-12-07T09:45:00+00:00"
        );
        // N/step runs to the maximum.
        assert_eq!(
            next("50/5 * * * *", "2026-12-07T09:56:00Z"),
            "2026-12-07T10:50:00+00:00"
        );
        assert_eq!(
            next("0 9 * JAN-mar MON-fri", "2026-12-07T09:30:00Z"),
            "2027-01-01T09:00:00+00:00"
        );
        // Both day fields restricted: either matches (the 15th, or a Monday).
        assert_eq!(
            next("0 0 15 * 1", "2026-12-08T00:00:00Z"),
            "2026-12-14T00:00:00+00:00"
        );
        // One day field starred: both must match (Mondays only, not every day).
        assert_eq!(
            next("0 0 ? * 1", "2026-12-08T00:00:00Z"),
            "2026-12-14T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 */1 * 1", "2026-12-08T00:00:00Z"),
            "2026-12-14T00:00:00+00:00"
        );
    }

    #[test]
    fn descriptors() {
        let from = "2026-12-07T09:30:00Z";
        assert_eq!(next("@hourly", from), "2026-12-07T10:00:00+00:00");
        assert_eq!(next("@daily", from), "2026-12-08T00:00:00+00:00");
        assert_eq!(next("@midnight", from), "2026-12-08T00:00:00+00:00");
        // 2026-12-13 is a Sunday.
        assert_eq!(next("@weekly", from), "2026-12-13T00:00:00+00:00");
        assert_eq!(next("@monthly", from), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("@yearly", from), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("@annually", from), "2027-01-01T00:00:00+00:00");
        assert_eq!(
            next("@every 90s", "2026-12-07T09:30:00.5Z"),
            "2026-12-07T09:31:30+00:00"
        );
    }

    #[test]
    fn time_zones() {
        let ny = load_time_zone("America/New_York").expect("known zone");
        let s = Schedule::parse_in("0 9 * * *", ny).expect("parses");
        // 09:00 in New York in December is 14:00 UTC.
        assert_eq!(
            s.next(at("2026-12-07T12:00:00Z")).map(|t| t.to_rfc3339()),
            Some("2026-12-07T14:00:00+00:00".into())
        );
        // A TZ= prefix carries its own zone.
        let s = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").expect("parses");
        assert_eq!(
            s.next(at("2026-12-07T00:00:00Z")).map(|t| t.to_rfc3339()),
            Some("2026-12-08T00:00:00+00:00".into())
        );
        // The spring-forward gap: 02:30 does not exist on 2027-03-14 in New York, and
        // kube skips that day rather than run at 03:00.
        let s = Schedule::parse_in("30 2 * * *", ny).expect("parses");
        assert_eq!(
            s.next(at("2027-03-13T08:00:00Z")).map(|t| t.to_rfc3339()),
            Some("2027-03-15T06:30:00+00:00".into())
        );
        assert_eq!(
            load_time_zone("Mars/Olympus").unwrap_err(),
            "unknown time zone Mars/Olympus"
        );
        assert_eq!(load_time_zone(""), Ok(Tz::UTC));
    }

    #[test]
    fn never() {
        let s = Schedule::parse("0 0 31 2 *").expect("parses, as in kube");
        assert_eq!(s.next(at("2026-12-07T00:00:00Z")), None);
        let s = Schedule::parse(", * * * *").expect("parses, as in kube");
        assert_eq!(s.next(at("2026-12-07T00:00:00Z")), None);
    }

    #[test]
    fn errors_in_kube_words() {
        assert_eq!(
            error("bogus"),
            "expected exactly 5 fields, found 1: [bogus]"
        );
        assert_eq!(
            error("* * * * * *"),
            "expected exactly 5 fields, found 6: [* * * * * *]"
        );
        assert_eq!(
            error("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(error("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            error("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            error("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(error("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(error("1/2/3 * * * *"), "too many slashes: 1/2/3");
        assert_eq!(
            error("L * * * *"),
            "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax"
        );
        assert_eq!(
            error("* * * * 5#2"),
            "failed to parse int from 5#2: strconv.Atoi: parsing \"5#2\": invalid syntax"
        );
        assert_eq!(
            error("@fortnightly"),
            "unrecognized descriptor: @fortnightly"
        );
        assert_eq!(
            error("@every soon"),
            "failed to parse duration @every soon: time: invalid duration \"soon\""
        );
        assert_eq!(
            error("TZ=Mars/Olympus * * * * *"),
            "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"
        );
        assert_eq!(error(""), "empty spec string");
    }
}
