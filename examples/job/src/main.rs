//! A batch-style Wasm module: counts the primes below N (argv[1], default 100000), prints
//! the answer and exits 0, so its pod ends Succeeded.
//!
//! Run as a pod of an Indexed Job (`JOB_COMPLETION_INDEX` set by the Job controller),
//! argv[1] is instead the width of one slice: index i counts the primes in
//! [i*N, (i+1)*N) and prints its part, so the Job's logs add up to the whole.

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    match std::env::var("JOB_COMPLETION_INDEX")
        .ok()
        .and_then(|i| i.parse::<u64>().ok())
    {
        Some(i) => {
            let (lo, hi) = (i.saturating_mul(n), i.saturating_add(1).saturating_mul(n));
            let count = primes_in(lo, hi);
            println!("index {i}: {count} primes in [{lo}, {hi})");
        }
        None => println!("there are {} primes below {n}", primes_in(0, n)),
    }
}

/// The primes in [lo, hi): a segmented sieve, so a slice costs memory for its own width
/// and the square root of its end, not for everything below it.
fn primes_in(lo: u64, hi: u64) -> usize {
    if hi <= lo.max(2) {
        return 0;
    }
    let mut root = (hi as f64).sqrt() as u64;
    while root * root < hi {
        root += 1;
    }
    let mut small = vec![true; root as usize + 1];
    let mut base = Vec::new();
    for p in 2..=root as usize {
        if small[p] {
            base.push(p as u64);
            let mut j = p * p;
            while j <= root as usize {
                small[j] = false;
                j += p;
            }
        }
    }
    let lo = lo.max(2);
    let mut seg = vec![true; (hi - lo) as usize];
    for &p in &base {
        let start = (p * p).max(lo.div_ceil(p) * p);
        let mut j = start;
        while j < hi {
            seg[(j - lo) as usize] = false;
            j += p;
        }
    }
    seg.iter().filter(|&&b| b).count()
}
