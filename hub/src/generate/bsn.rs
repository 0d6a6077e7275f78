//! Unique, valid, random-looking BSNs without remembering the ones already handed out.
//!
//! A keyed Feistel permutation (with cycle walking) maps a running counter onto the
//! 90 million eight-digit prefixes 10000000..=99999999; the ninth digit follows from the
//! elfproef. A permutation never repeats, and a prefix has at most one valid check digit, so
//! every BSN is unique; prefixes without a valid check digit (about 1 in 11) are skipped.

use matchpoint_schemas::bsn::passes_elfproef;

const PREFIX_BASE: u32 = 10_000_000;
const PREFIX_COUNT: u32 = 90_000_000;
const HALF_BITS: u32 = 14;
const HALF_MASK: u32 = (1 << HALF_BITS) - 1;
const ROUNDS: usize = 4;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hands out BSNs in a seeded, repeatable order.
#[derive(Debug, Clone)]
pub(crate) struct BsnAllocator {
    keys: [u64; ROUNDS],
    next: u32,
}

impl BsnAllocator {
    pub(crate) fn new(seed: u64) -> Self {
        let mut keys = [0u64; ROUNDS];
        let mut k = seed ^ 0x4253_4E5F_4B45_5953; // "BSN_KEYS"
        for key in &mut keys {
            k = splitmix64(k);
            *key = k;
        }
        BsnAllocator { keys, next: 0 }
    }

    /// One Feistel pass over the 28-bit domain; a bijection of 0..2^28.
    fn feistel(&self, x: u32) -> u32 {
        let mut left = x >> HALF_BITS;
        let mut right = x & HALF_MASK;
        for key in &self.keys {
            let f = (splitmix64(key ^ u64::from(right)) as u32) & HALF_MASK;
            let new_right = left ^ f;
            left = right;
            right = new_right;
        }
        (left << HALF_BITS) | right
    }

    /// A bijection of 0..PREFIX_COUNT (cycle walking keeps the Feistel output in range).
    fn permute(&self, i: u32) -> u32 {
        let mut x = self.feistel(i);
        while x >= PREFIX_COUNT {
            x = self.feistel(x);
        }
        x
    }

    /// The next unused valid BSN, or `None` when all ~81.8 million are used.
    pub(crate) fn next_bsn(&mut self) -> Option<u32> {
        while self.next < PREFIX_COUNT {
            let prefix = PREFIX_BASE + self.permute(self.next);
            self.next += 1;
            let check = check_digit(prefix);
            if check < 10 {
                let bsn = prefix * 10 + check;
                if passes_elfproef(bsn) {
                    return Some(bsn);
                }
            }
        }
        None
    }
}

/// The ninth digit that makes `prefix` (eight digits) pass the elfproef; 10 if none does.
fn check_digit(prefix: u32) -> u32 {
    let mut sum = 0u32;
    let mut p = prefix;
    // Digits from the eighth (weight 2) back to the first (weight 9).
    for weight in 2..=9 {
        sum += weight * (p % 10);
        p /= 10;
    }
    sum % 11
}

/// A nine-digit number that fails the elfproef, made from a valid `bsn` by changing its
/// last digit by `delta` (1..=9).
pub(crate) fn corrupt(bsn: u32, delta: u32) -> u32 {
    let last = bsn % 10;
    let changed = (last + delta.clamp(1, 9)) % 10;
    bsn - last + changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bsns_are_valid_unique_and_nine_digits() {
        let mut a = BsnAllocator::new(7);
        let mut seen = HashSet::new();
        for _ in 0..300_000 {
            let b = a.next_bsn().expect("capacity");
            assert!(passes_elfproef(b), "{b:09} fails the elfproef");
            assert!((100_000_000..1_000_000_000).contains(&b));
            assert!(seen.insert(b), "BSN {b:09} handed out twice");
        }
    }

    #[test]
    fn the_permutation_is_a_bijection_on_a_sample() {
        let a = BsnAllocator::new(1);
        let mut seen = HashSet::new();
        for i in 0..200_000 {
            let p = a.permute(i);
            assert!(p < PREFIX_COUNT);
            assert!(seen.insert(p));
        }
    }

    #[test]
    fn seeds_give_different_sequences() {
        let mut a = BsnAllocator::new(1);
        let mut b = BsnAllocator::new(2);
        let xs: Vec<_> = (0..10).filter_map(|_| a.next_bsn()).collect();
        let ys: Vec<_> = (0..10).filter_map(|_| b.next_bsn()).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn corrupted_bsns_fail_the_elfproef() {
        let mut a = BsnAllocator::new(3);
        for delta in 1..=9 {
            let b = a.next_bsn().expect("capacity");
            let c = corrupt(b, delta);
            assert!(!passes_elfproef(c), "{c:09} should fail");
            assert!((100_000_000..1_000_000_000).contains(&c));
        }
    }
}
