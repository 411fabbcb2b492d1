//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log, with the
//! kubelet's options and its answers when the container has none to give.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::{text, QueryPairs};
use crate::status::RunState;
use crate::Agent;

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

pub async fn container_logs(
    State(agent): State<Arc<Agent>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    QueryPairs(q): QueryPairs,
) -> Response {
    let q: HashMap<String, String> = q.into_iter().collect();
    match logs(&agent, &ns, &pod, &container, &q) {
        Ok(r) => r,
        Err((code, msg)) => text(code, msg),
    }
}

/// Why there is no log to give: the status and message of the answer.
type Refused = (StatusCode, String);

fn refuse(code: StatusCode, msg: impl Into<String>) -> Refused {
    (code, msg.into())
}

fn logs(
    agent: &Agent,
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, String>,
) -> Result<Response, Refused> {
    let Some(h) = agent.pods.find(ns, pod) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "pod {ns}/{pod} is not running on node {}",
                agent.opts.node_name
            ),
        ));
    };
    let (run, live) = which_run(&h, pod, container, flag(q, "previous"))?;
    let opts = spindle_logs::LogOptions {
        follow: flag(q, "follow"),
        tail: tail_lines(q)?,
        since: since(q)?,
        timestamps: flag(q, "timestamps"),
        limit_bytes: q.get("limitBytes").and_then(|s| s.parse::<u64>().ok()),
    };
    let stream = spindle_logs::read(&h.log_dir(container), run, opts, live);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// Which run's file to read, following the kubelet: the current run, or while the
/// container waits to restart, the run that just ended; `previous` is the last ended
/// run. With the live log of a running container, to follow it.
fn which_run(
    h: &crate::lifecycle::PodHandle,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(u32, Option<spindle_logs::LiveLog>), Refused> {
    let sh = h.shared();
    let Some(c) = sh
        .containers
        .iter()
        .chain(sh.inits.iter())
        .find(|c| c.name == container)
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        ));
    };
    let run = if previous {
        match &c.last {
            Some(t) => t.run,
            None => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                ))
            }
        }
    } else {
        match &c.state {
            RunState::Running { .. } => c.restart_count as u32,
            RunState::Terminated(t) => t.run,
            RunState::Waiting { reason, .. } => match &c.last {
                Some(t) => t.run,
                None => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!(
                        "container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"
                    ),
                    ))
                }
            },
        }
    };
    let live = if !previous && c.is_running() {
        sh.logs.get(container).map(|w| w.live())
    } else {
        None
    };
    Ok((run, live))
}

/// `sinceTime` (RFC 3339) or `sinceSeconds`, as a point in time.
fn since(q: &HashMap<String, String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, Refused> {
    if let Some(t) = q.get("sinceTime") {
        return match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Ok(Some(t.with_timezone(&chrono::Utc))),
            Err(e) => Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("sinceTime {t:?}: {e}"),
            )),
        };
    }
    let Some(s) = q.get("sinceSeconds") else {
        return Ok(None);
    };
    match s.parse::<i64>() {
        Ok(s) => Ok(Some(seconds_ago(s))),
        Err(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("sinceSeconds {s:?} is not a number"),
        )),
    }
}

/// Now less `s` seconds, saturating at the ends of time: a count too large for a date
/// reads the whole log (and a hugely negative one nothing) instead of panicking.
fn seconds_ago(s: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::try_seconds(s)
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(if s > 0 {
            chrono::DateTime::<chrono::Utc>::MIN_UTC
        } else {
            chrono::DateTime::<chrono::Utc>::MAX_UTC
        })
}

/// `tailLines`; a negative count means all lines.
fn tail_lines(q: &HashMap<String, String>) -> Result<Option<usize>, Refused> {
    match q.get("tailLines").map(|s| s.parse::<i64>()) {
        Some(Ok(n)) if n >= 0 => Ok(Some(n as usize)),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "tailLines must be a number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge sinceSeconds from the query is not a panic of the handler.
    #[test]
    fn since_seconds_saturates() {
        let q = |v: &str| HashMap::from([("sinceSeconds".to_string(), v.to_string())]);
        let oldest = chrono::DateTime::<chrono::Utc>::MIN_UTC;
        let latest = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        for (v, want) in [
            (i64::MAX.to_string(), oldest),
            ((i64::MAX / 1000 - 1).to_string(), oldest),
            (i64::MIN.to_string(), latest),
        ] {
            assert_eq!(since(&q(&v)).ok(), Some(Some(want)), "{v}");
        }
        let before = chrono::Utc::now() - chrono::Duration::seconds(60);
        let got = since(&q("60")).ok().flatten().expect("a time");
        let after = chrono::Utc::now() - chrono::Duration::seconds(60);
        assert!(before <= got && got <= after, "{got}");
        assert!(since(&q("soon")).is_err());
    }
}
