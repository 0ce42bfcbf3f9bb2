//! Cost of one tick's expiry pass over the replica's request table with
//! 100,000 waiting requests: when nothing is due (the common tick), and
//! when the tick's share of them is due (a steady stream of timeouts:
//! 1/70 of them, a 7 s timeout at 100 ms ticks).
//!
//! cargo bench -p corekv-server --bench request_expiry -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::time::{Duration, Instant};

use corekv_server::node::replica::requests::Requests;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const WAITING: u64 = 100_000;
const TIMEOUT: Duration = Duration::from_secs(7);

/// `WAITING` reads whose deadlines are spread evenly over one timeout.
fn table(t0: Instant) -> Requests {
    let mut r = Requests::new(WAITING as usize);
    for i in 0..WAITING {
        let ticket = r.ticket().expect("below the cap");
        let arrival = t0 + TIMEOUT * (i as u32) / (WAITING as u32);
        let (reply, rx) = tokio::sync::oneshot::channel();
        std::mem::forget(rx);
        r.queue_read(ticket, arrival + TIMEOUT, reply);
    }
    r
}

fn expiry(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut idle = table(t0);
    c.bench_function("expire, 100k waiting, none due", |b| {
        b.iter(|| black_box(idle.expire(black_box(t0 + TIMEOUT / 2), true)))
    });
    c.bench_function("expire, 100k waiting, 1/70 due", |b| {
        b.iter_batched(
            || table(t0),
            // The table is returned so its drop is not timed.
            |mut r| {
                let n = r.expire(t0 + TIMEOUT + TIMEOUT / 70, true);
                (black_box(n), r)
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, expiry);
criterion_main!(benches);
