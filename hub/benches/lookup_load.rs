//! Load generator for the lookup API: `N` connections post lookups for `S` seconds and report
//! lookups/s and latency percentiles. Driven by `bench/lookup-bench.sh`; see bench/README.md.
//!
//! ```text
//! cargo bench -p matchpoint-hub --bench lookup_load -- \
//!     --url http://127.0.0.1:8080 --token TOKEN --bsns FILE [--connections 32] [--seconds 15]
//! ```
//!
//! `FILE` holds one (generated, fake) BSN per line. Prints one line on stdout:
//! `lookups requests=N seconds=S per_sec=R p50_ms=… p90_ms=… p99_ms=… max_ms=… ok=… forbidden=… other=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    token: String,
    bsns: Vec<String>,
    connections: usize,
    seconds: u64,
    warmup: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut token = None;
    let mut bsns = None;
    let mut connections = 32usize;
    let mut seconds = 15u64;
    let mut warmup = 2u64;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val("--url")?),
            "--token" => token = Some(val("--token")?),
            "--bsns" => {
                let path = val("--bsns")?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                bsns = Some(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
            }
            "--connections" => {
                connections = val("--connections")?
                    .parse()
                    .map_err(|_| "--connections takes a number")?
            }
            "--seconds" => {
                seconds = val("--seconds")?
                    .parse()
                    .map_err(|_| "--seconds takes a number")?
            }
            "--warmup" => {
                warmup = val("--warmup")?
                    .parse()
                    .map_err(|_| "--warmup takes a number")?
            }
            // Passed by `cargo bench`.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let bsns = bsns.ok_or("--bsns FILE is required")?;
    if bsns.is_empty() {
        return Err("the BSN file is empty".into());
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        token: token.ok_or("--token is required")?,
        bsns,
        connections: connections.max(1),
        seconds: seconds.max(1),
        warmup,
    })
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    forbidden: u64,
    other: u64,
}

async fn worker(
    client: reqwest::Client,
    args: Arc<Args>,
    offset: usize,
    measure_from: Instant,
    until: Instant,
) -> Tally {
    let endpoint = format!("{}/api/v1/lookups", args.url.trim_end_matches('/'));
    let mut tally = Tally::default();
    let mut i = offset;
    loop {
        let started = Instant::now();
        if started >= until {
            return tally;
        }
        let bsn = &args.bsns[i % args.bsns.len()];
        i += args.connections;
        let body = format!(r#"{{"bsn":"{bsn}","purpose":"coordinating_care"}}"#);
        let sent = client
            .post(&endpoint)
            .bearer_auth(&args.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        // A lookup is done when the whole answer has arrived: read the body too.
        let status = match sent {
            Ok(r) => {
                let s = r.status().as_u16();
                if r.bytes().await.is_ok() { s } else { 0 }
            }
            Err(_) => 0,
        };
        let took = started.elapsed();
        if started < measure_from {
            continue;
        }
        tally
            .latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        match status {
            200 => tally.ok += 1,
            403 => tally.forbidden += 1,
            _ => tally.other += 1,
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("lookup_load: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lookup_load: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let total = rt.block_on(async {
        let client = match reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("lookup_load: cannot build an HTTP client: {e}");
                std::process::exit(1);
            }
        };
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(args.warmup);
        let until = measure_from + Duration::from_secs(args.seconds);
        let tasks: Vec<_> = (0..args.connections)
            .map(|w| tokio::spawn(worker(client.clone(), args.clone(), w, measure_from, until)))
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            if let Ok(t) = t.await {
                total.latencies_us.extend(t.latencies_us);
                total.ok += t.ok;
                total.forbidden += t.forbidden;
                total.other += t.other;
            }
        }
        total
    });
    let mut lat = total.latencies_us;
    lat.sort_unstable();
    let n = lat.len() as f64;
    println!(
        "lookups requests={} seconds={} per_sec={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} ok={} forbidden={} other={}",
        lat.len(),
        args.seconds,
        n / args.seconds as f64,
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        total.ok,
        total.forbidden,
        total.other
    );
}
