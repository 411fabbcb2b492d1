//! Hello, Spindle: a long-running WASI p2 component. It prints its greeting (from the
//! GREETING variable, which the manifest fills from a ConfigMap) and then a heartbeat line,
//! so `kubectl logs -f` has something to follow.

use std::time::Duration;

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_string());
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "somewhere".to_string());
    let every: u64 = std::env::var("INTERVAL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("{greeting} from {pod}");
    let mut beat: u64 = 0;
    loop {
        std::thread::sleep(Duration::from_secs(every));
        beat += 1;
        println!("{pod} still here (beat {beat})");
    }
}
