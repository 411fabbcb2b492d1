//! The CronJob controller's schedule arithmetic on a fake clock: `now` is an argument,
//! so hours of schedule are checked in microseconds.

use super::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

fn every_minute() -> Schedule {
    Schedule::parse("* * * * *").expect("parses")
}

fn times(created: &str, last: Option<&str>, deadline: Option<i64>) -> Times {
    Times {
        created: at(created),
        last_schedule: last.map(at),
        starting_deadline: deadline,
    }
}

#[test]
fn the_first_run_is_the_first_minute_after_creation() {
    let t = times("2026-12-07T09:00:30Z", None, None);
    let s = every_minute();
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:00:59Z"), &s),
        Ok(None)
    );
    // Requeued for 09:01:00 plus the slack, not polled.
    assert_eq!(
        next_schedule_in(&t, at("2026-12-07T09:00:59Z"), &s),
        Some(Duration::from_millis(1100))
    );
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:01:00.05Z"), &s),
        Ok(Some((at("2026-12-07T09:01:00Z"), false)))
    );
}

#[test]
fn a_run_done_is_not_due_again_and_the_next_is_a_minute_on() {
    let t = times("2026-12-07T09:00:30Z", Some("2026-12-07T09:01:00Z"), None);
    let s = every_minute();
    let now = at("2026-12-07T09:01:30Z");
    assert_eq!(next_schedule_time(&t, now, &s), Ok(None));
    assert_eq!(
        next_schedule_in(&t, now, &s),
        Some(Duration::from_millis(30_100))
    );
}

#[test]
fn missed_runs_start_only_the_latest() {
    let s = every_minute();
    // Down for four minutes: one run, the latest, not four.
    let t = times("2026-12-07T09:00:30Z", Some("2026-12-07T09:01:00Z"), None);
    let now = at("2026-12-07T09:05:10Z");
    assert_eq!(
        next_schedule_time(&t, now, &s),
        Ok(Some((at("2026-12-07T09:05:00Z"), false)))
    );
    // Exactly 100 missed is still "few"; 101 is too many, and still only the latest.
    let t = times("2026-12-07T07:00:30Z", Some("2026-12-07T07:00:00Z"), None);
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T08:40:00Z"), &s),
        Ok(Some((at("2026-12-07T08:40:00Z"), false)))
    );
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T08:41:00Z"), &s),
        Ok(Some((at("2026-12-07T08:41:00Z"), true)))
    );
}

#[test]
fn a_starting_deadline_limits_how_far_back_runs_count() {
    let s = every_minute();
    // Three hours down, deadline 200 s: only the last few minutes count, not too many.
    let t = times(
        "2026-12-07T06:00:30Z",
        Some("2026-12-07T06:01:00Z"),
        Some(200),
    );
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:05:10Z"), &s),
        Ok(Some((at("2026-12-07T09:05:00Z"), false)))
    );
    // The due run is older than the deadline: nothing to start.
    let t = times(
        "2026-12-07T09:00:30Z",
        Some("2026-12-07T09:01:00Z"),
        Some(5),
    );
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:05:10Z"), &s),
        Ok(None)
    );
}

#[test]
fn every_schedules_count_from_the_last_run() {
    let s = Schedule::parse("@every 90s").expect("parses");
    let t = times("2026-12-07T09:00:00Z", None, None);
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:03:05Z"), &s),
        Ok(Some((at("2026-12-07T09:03:00Z"), false)))
    );
}

#[test]
fn an_impossible_date_is_an_invalid_schedule() {
    let s = Schedule::parse("0 0 31 2 *").expect("parses, as in kube");
    let t = times("2026-12-07T09:00:00Z", None, None);
    assert_eq!(
        next_schedule_time(&t, at("2026-12-07T09:03:05Z"), &s),
        Err("time difference between two schedules is less than 1 second".into())
    );
}

fn cronjob(tz: Option<&str>) -> CronJob {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "ops", "uid": "u-1",
                     "creationTimestamp": "2026-12-07T09:00:00Z"},
        "spec": {
            "schedule": "0 9 * * *", "timeZone": tz,
            "jobTemplate": {
                "metadata": {"labels": {"app": "report"}, "annotations": {"team": "ops"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "report:wasm"}]}}}
            }
        }
    }))
    .expect("cronjob")
}

#[test]
fn a_job_is_named_after_its_scheduled_minute_and_says_when_in_the_zone() {
    let cj = cronjob(Some("Asia/Tokyo"));
    let sched = parse_schedule(&cj).expect("parses");
    // 09:00 in Tokyo is 00:00 UTC.
    let due = sched.next(at("2026-12-07T09:00:00Z")).expect("fires");
    assert_eq!(due, at("2026-12-08T00:00:00Z"));
    let spec = cj.spec.clone().expect("spec");
    let job = job_from_template(&cj, &spec, due).expect("job");
    assert_eq!(job.metadata.name.as_deref(), Some("nightly-29944800"));
    assert_eq!(due.timestamp() / 60, 29_944_800);
    let ann = job.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann[SCHEDULED_TIMESTAMP], "2026-12-08T09:00:00+09:00");
    assert_eq!(ann["team"], "ops");
    assert_eq!(
        job.metadata.labels.clone().unwrap_or_default()["app"],
        "report"
    );
    let owner = &job.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("CronJob", "nightly", "u-1", Some(true))
    );
    // Without a zone the annotation is in UTC, as kube writes it.
    let cj = cronjob(None);
    let job = job_from_template(&cj, &cj.spec.clone().expect("spec"), due).expect("job");
    assert_eq!(
        job.metadata.annotations.unwrap_or_default()[SCHEDULED_TIMESTAMP],
        "2026-12-08T00:00:00Z"
    );
}

fn job(name: &str, start: Option<&str>, cond: Option<&str>) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {
            "startTime": start,
            "conditions": cond.map(|c| vec![json!({"type": c, "status": "True"})]),
        }
    }))
    .expect("job")
}

#[test]
fn history_is_pruned_oldest_start_first() {
    let mut jobs = [
        job("c", Some("2026-12-07T09:03:00Z"), Some("Complete")),
        job("never-started", None, Some("Failed")),
        job("a", Some("2026-12-07T09:01:00Z"), Some("Complete")),
        job("b", Some("2026-12-07T09:01:00Z"), None),
    ];
    jobs.sort_by(start_order);
    let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, ["a", "b", "c", "never-started"]);
    let states: Vec<Option<&str>> = jobs.iter().map(finished).collect();
    assert_eq!(
        states,
        [Some("Complete"), None, Some("Complete"), Some("Failed")]
    );
}
