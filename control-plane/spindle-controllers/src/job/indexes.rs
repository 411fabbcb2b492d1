//! Completion indexes of an Indexed Job as the status spells them: sorted, compressed
//! ranges such as "0-3,5,7-9" (`status.completedIndexes`, `status.failedIndexes`).

use std::collections::BTreeSet;

/// The indexes below `completions` that `s` lists; anything malformed is skipped, as
/// kube-controller-manager ignores what it cannot parse rather than failing the Job.
pub fn parse(s: Option<&str>, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.unwrap_or("").split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else { continue };
        for i in lo.max(0)..=hi.min(completions - 1) {
            out.insert(i);
        }
    }
    out
}

/// The compressed form: three or more consecutive indexes become "a-b".
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    // Two neighbours stay a list ("4,5"), as kube-controller-manager writes them.
    let flush = |parts: &mut Vec<String>, (a, b): (i32, i32)| {
        parts.push(match b - a {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        })
    };
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some(r) => {
                flush(&mut parts, r);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(r) = run {
        flush(&mut parts, r);
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress_and_parse_back() {
        let set: BTreeSet<i32> = [0, 1, 2, 3, 5, 7, 8, 9].into_iter().collect();
        assert_eq!(format(&set), "0-3,5,7-9");
        assert_eq!(parse(Some("0-3,5,7-9"), 10), set);
        assert_eq!(format(&BTreeSet::new()), "");
        assert_eq!(format(&[4].into_iter().collect()), "4");
        assert_eq!(format(&[4, 5].into_iter().collect()), "4,5");
        assert_eq!(format(&[1, 2, 4, 5, 6].into_iter().collect()), "1,2,4-6");
    }

    #[test]
    fn parsing_keeps_only_indexes_below_completions_and_skips_garbage() {
        let got = parse(Some("1-3,x,8-12,-1"), 10);
        assert_eq!(got, [1, 2, 3, 8, 9].into_iter().collect());
        assert!(parse(None, 10).is_empty());
    }
}
