//! `matchpoint supplier-db` writes its rows while the feeds generate them, batch by batch,
//! so the memory it needs does not grow with the population (issue 3: 1M records per kind).
//!
//! Measured with a counting global allocator over the whole process (the SQLite connection
//! works on a thread of its own and frees the SQL text built on the test's thread, so a
//! per-thread count would not add up). This binary holds this one test, so nothing else
//! allocates while it measures. SQLite's own page cache is allocated by SQLite, not through
//! Rust's allocator, and is bounded by its `cache_size` anyway.
//!
//! With one batch as large as the whole population (`BATCH` = 1,000,000, i.e. all rows held
//! at once, as before issue 3's streaming) the large build peaks at about 36 MB against
//! 2 MB, and the last assertion fails.

use matchpoint_hub::sandbox::supplier_db::{Generation, SupplierDb, SupplierOptions};

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting(counting::process);

const KB: isize = 1024;
const MB: isize = 1024 * KB;

/// Rows per INSERT in this test: small, so that a batch is full at both sizes.
const BATCH: usize = 500;

/// What building the supplier databases of `persons` persons (generation 0, then one
/// advance) wrote, and the peak heap above the start while doing it.
struct Build {
    first: Generation,
    next: Generation,
    peak: isize,
}

fn build(persons: u64, batch_rows: usize) -> Build {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("supplier.db").display());
    let opts = SupplierOptions {
        persons,
        seed: 5,
        batch_rows,
        ..SupplierOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = counting::start();
    let (first, next) = runtime.block_on(async {
        let (mut db, first) = SupplierDb::create(&url, &opts).await.expect("create");
        let next = db.advance().await.expect("advance");
        let (okc4, ris) = db.row_counts().await.expect("counts");
        assert_eq!(okc4, first.okc4.total() + next.okc4.new);
        assert_eq!(ris, first.ris.total() + next.ris.new);
        db.close().await.expect("close");
        (first, next)
    });
    let peak = counting::peak_since(before);
    Build { first, next, peak }
}

#[test]
fn building_the_supplier_databases_needs_the_same_memory_for_twenty_times_the_persons() {
    let small = build(2_000, BATCH);
    let large = build(40_000, BATCH);
    eprintln!(
        "supplier-db: {} + {} rows in {} bytes peak, {} + {} rows in {} bytes peak",
        small.first.okc4.total(),
        small.first.ris.total(),
        small.peak,
        large.first.okc4.total(),
        large.first.ris.total(),
        large.peak
    );
    // The test means something: both sizes fill several batches, and twenty times the
    // persons is about twenty times the rows. Held in memory as records and SQL text (over
    // 1 KB a row) they would take more than 40 MB above the small build.
    let rows = |b: &Build| (b.first.okc4.total() + b.first.ris.total()) as isize;
    assert!(rows(&small) > 4 * BATCH as isize, "{}", rows(&small));
    assert!(rows(&large) > 15 * rows(&small), "{}", rows(&large));
    assert!(rows(&large) - rows(&small) > 40_000);
    // The advance path is streamed too: it wrote rows of every kind.
    assert!(large.next.okc4.new > 0 && large.next.okc4.revised > 0);
    assert!(large.next.okc4.ended > 0 && large.next.okc4.deleted > 0);
    assert!(large.next.ris.total() > BATCH as u64);
    // The allocator does count: a batch of 500 rows alone is hundreds of kilobytes.
    assert!(small.peak > 256 * KB, "{}", small.peak);
    // What grows: the feeds' checkpoints (a few hundred KB at most), not the rows (measured:
    // 0.9 MB and 1.3 MB peak).
    assert!(
        large.peak - small.peak < 4 * MB,
        "building for 40k persons peaked at {} bytes, for 2k persons at {}: memory grows \
         with the population",
        large.peak,
        small.peak
    );
}
