//! Rollout benchmark: 10 rollouts v1<->v2 of a real compose service (Compose v2) behind the
//! real Traefik, with per-step timings from the journal and hoist's own overhead.
//!
//! Run: `scripts/setup && cargo bench --features test-support --bench rollout`
//!
//! overhead = the rollout's total time minus the pull step and minus every wait on the
//! outside world the journal records (health, Traefik confirmation, the cord taking
//! effect, the configured drain, the app stopping). It is shown with and without the
//! Docker engine's own time to create, start and remove containers (`engine`), which on
//! this machine's fuse-overlayfs storage is most of it.
// Test code: a panic is how a test fails; its helpers are `pub` inside a private module, and a
// scenario reads best in one piece.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::too_many_lines,
    unreachable_pub
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use support::hoist::{Fixture, Options};

const ROLLOUTS: usize = 10;
const STEPS: [&str; 7] = [
    "resolve", "pull", "start", "health", "switch", "drain", "record",
];

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let (f, load) = Fixture::start_serving(Options::default()).await;
    let mut wall = Vec::new();
    for i in 0..ROLLOUTS {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        let clock = Instant::now();
        f.deploy(tag).await.assert_code(0);
        wall.push(clock.elapsed());
    }
    let report = load.stop().await;
    let mut history = f.history().await;
    history.reverse();

    println!(
        "hoist rollout benchmark: {ROLLOUTS} rollouts v1<->v2, drain 1s, Traefik API confirmation"
    );
    println!("load during the run: {report}\n");
    print!("{:>3}", "#");
    for s in STEPS {
        print!(" {s:>8}");
    }
    println!(
        " {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "total", "waited", "engine", "overhead", "own", "process"
    );
    let mut overheads = Vec::new();
    let mut owns = Vec::new();
    let mut process = Vec::new();
    for (i, d) in history.iter().enumerate() {
        let steps = d["steps"].as_array().unwrap();
        let ms = |name: &str, field: &str| {
            steps
                .iter()
                .find(|s| s["step"] == name)
                .and_then(|s| s[field].as_i64())
                .unwrap_or(0)
        };
        let total = d["finished_at"].as_i64().unwrap() - d["started_at"].as_i64().unwrap();
        let waited: i64 = STEPS.iter().map(|s| ms(s, "waited_ms")).sum();
        let engine: i64 = STEPS.iter().map(|s| ms(s, "engine_ms")).sum();
        let overhead = total - ms("pull", "duration_ms") - waited;
        let own = overhead - engine;
        // Process start, config, Docker connection and the recovery check, outside the journal.
        let outside = wall[i].as_millis() as i64 - total;
        print!("{:>3}", i + 1);
        for s in STEPS {
            print!(" {:>8}", ms(s, "duration_ms"));
        }
        println!(" {total:>8} {waited:>8} {engine:>8} {overhead:>9} {own:>9} {outside:>9}");
        overheads.push(overhead);
        owns.push(own);
        process.push(outside);
    }
    overheads.sort_unstable();
    owns.sort_unstable();
    process.sort_unstable();
    println!("\nall times in ms; waited = health + Traefik + cord + drain + app stop waits;");
    println!("engine = Docker creating, starting and removing containers; own = overhead - engine");
    println!(
        "overhead per rollout (total - pull - waits): median {} ms, max {} ms",
        overheads[overheads.len() / 2],
        overheads[overheads.len() - 1]
    );
    println!(
        "hoist's own work per rollout (overhead - engine): median {} ms, max {} ms (target < 100 ms)",
        owns[owns.len() / 2],
        owns[owns.len() - 1]
    );
    println!(
        "process start-up outside the rollout (config, Docker connect, lock, recovery check): median {} ms, max {} ms",
        process[process.len() / 2],
        process[process.len() - 1]
    );
}
