//! A batch-style Wasm module: counts the primes below N (argv[1], default 100000), prints
//! the answer and exits 0, so its pod ends Succeeded.

fn main() {
    let limit: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut sieve = vec![true; limit.max(2)];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i < limit {
        if sieve[i] {
            let mut j = i * i;
            while j < limit {
                sieve[j] = false;
                j += i;
            }
        }
        i += 1;
    }
    let count = sieve.iter().filter(|&&p| p).count();
    println!("there are {count} primes below {limit}");
}
