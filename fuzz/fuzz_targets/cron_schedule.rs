//! Drives the scheduler's cron evaluation (`CronSchedule`: the `cron` crate plus our DST rule
//! in Europe/Amsterdam) over arbitrary expressions and instants.
//!
//! Besides "no panic, no hang", asserts the contract: a next firing is strictly after the
//! instant asked about, and the one after it is strictly later still.

#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use matchpoint_hub::schedule::CronSchedule;

fuzz_target!(|data: &[u8]| {
    // The first four bytes pick the instant (2020–2156), the rest is the expression.
    if data.len() < 4 {
        return;
    }
    let (head, expr) = data.split_at(4);
    let secs = 1_577_836_800 + i64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let Ok(schedule) = CronSchedule::parse_in(expr, "Europe/Amsterdam") else {
        return;
    };
    let Some(at) = DateTime::from_timestamp(secs, 0) else {
        return;
    };
    if let Some(next) = schedule.next_after(at) {
        assert!(next > at, "next firing {next} is not after {at}");
        if let Some(again) = schedule.next_after(next) {
            assert!(again > next, "firings do not increase: {next} then {again}");
        }
    }
});
