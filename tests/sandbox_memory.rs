//! The simulated upstreams' memory does not grow with the population: a feed generates its
//! records page by page from checkpoints of the seeded population instead of holding them
//! (`hub/src/generate/feed.rs`), so a 1M-record benchmark measures the connector, not the
//! sandbox.
//!
//! Measured with a counting global allocator that keeps the live and peak heap bytes of
//! each thread (this test binary only; every measurement runs on the test's own thread,
//! so tests running in parallel do not disturb each other).

use std::cell::Cell;
use std::sync::Arc;

use matchpoint_hub::generate::feed::Feed;
use matchpoint_hub::sandbox::Upstream;
use matchpoint_hub::sandbox::faults::FaultSpec;

#[path = "common/counting.rs"]
mod counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Counts per thread (const-initialised thread-locals without destructors: never allocates).
fn add(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting(add);

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Resets the peak to the live bytes now.
fn reset_peak() {
    let now = live();
    PEAK.with(|p| p.set(now));
}

fn peak() -> isize {
    PEAK.with(Cell::get)
}

/// Builds the okc-1 feed of `persons` persons; returns it with the heap bytes it holds.
fn feed(persons: u64) -> (Feed, isize) {
    let before = live();
    let feed = Feed::build("okc-1", "OKC1-", persons, 11, 0.7).expect("feed");
    (feed, live() - before)
}

const KB: isize = 1024;

#[test]
fn a_feed_holds_the_same_memory_for_ten_times_the_persons() {
    let (small, small_bytes) = feed(20_000);
    let (large, large_bytes) = feed(200_000);
    // The test means something: ten times the persons is about ten times the records, which
    // held in memory (~0.5 KB each) would take over 100 MB.
    assert!(small.len() > 15_000, "{} records", small.len());
    assert!(
        large.len() > 9 * small.len() && large.len() < 11 * small.len(),
        "{} vs {} records",
        large.len(),
        small.len()
    );
    // The allocator does count: the checkpoints alone are hundreds of bytes each.
    assert!(small_bytes > 16 * KB, "{small_bytes}");
    // What a feed holds: the catalogue (organisations and staff) and at most 1024
    // checkpoints of a few hundred bytes.
    assert!(
        large_bytes < 2048 * KB,
        "the 200k-person feed holds {large_bytes} bytes"
    );
    eprintln!("feed of 20k persons: {small_bytes} bytes, of 200k persons: {large_bytes} bytes");
    assert!(
        large_bytes - small_bytes < 512 * KB,
        "the feed of 200k persons holds {large_bytes} bytes, of 20k persons {small_bytes}: \
         it grows with the population"
    );
}

#[test]
fn serving_every_page_of_a_delivery_keeps_memory_bounded() {
    let (feed, _) = feed(100_000);
    let len = feed.len();
    let up = Upstream::new("okc-1", 11, feed, FaultSpec::default());
    let up = Arc::new(up);
    let before = live();
    reset_peak();
    let mut after: Option<String> = None;
    let mut served = 0usize;
    let mut pages = 0usize;
    loop {
        let page = up.page(None, after.as_deref(), 1000);
        served += page.records.len();
        pages += 1;
        after = page.records.last().map(|r| r.id.clone());
        if !page.more {
            assert_eq!(page.total, served);
            break;
        }
    }
    // Generation 0 holds back about one record in twenty for later generations.
    assert!(served > len * 9 / 10 && served < len, "{served} of {len}");
    assert!(pages > 100, "{pages} pages");
    let retained = live() - before;
    let paging_peak = peak() - before;
    eprintln!("paging: peak {paging_peak} bytes, retained {retained} bytes");
    // One page of 1000 records (~0.6 KB each as FeedRecords) plus one household being
    // generated; nothing proportional to the 100k-record delivery.
    assert!(
        paging_peak < 4096 * KB,
        "paging peaked at {paging_peak} bytes above the start"
    );
    assert!(
        retained < 64 * KB,
        "the upstream kept {retained} bytes after serving the delivery"
    );
    // An incremental delivery after `advance`: the same bound, and it serves what changed.
    let since = up.feed.timestamp(0);
    assert_eq!(up.advance(), 1);
    reset_peak();
    let page = up.page(Some(&since), None, 1000);
    assert!(page.total > 0 && page.total < len / 5, "{}", page.total);
    assert!(peak() - before < 4096 * KB);
}
