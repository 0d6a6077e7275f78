//! The citizen service number (BSN): parsing, normalisation and the elfproef.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a string is not a valid BSN. Never carries the digits themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BsnError {
    /// Something other than digits, spaces, dots or dashes.
    #[error("BSN contains characters other than digits, spaces, dots or dashes")]
    InvalidCharacters,
    /// Not 8 or 9 digits after normalisation.
    #[error("BSN must have 8 or 9 digits, found {0}")]
    WrongLength(usize),
    /// All zeroes.
    #[error("BSN 000000000 is not a valid number")]
    AllZero,
    /// The weighted digit sum is not divisible by 11.
    #[error("BSN fails elfproef")]
    Elfproef,
}

/// A validated BSN. Its digits never appear in `Debug` or `Display` and are wiped on drop.
///
/// The only way to get one is [`Bsn::parse`], so holding a `Bsn` means it passed the elfproef.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Bsn([u8; 9]);

impl Bsn {
    /// Normalises (strips spaces, dots and dashes; pads 8 digits with a leading zero) and
    /// checks the elfproef.
    pub fn parse(input: &str) -> Result<Self, BsnError> {
        let mut digits = [0u8; 9];
        let mut n = 0usize;
        for c in input.chars() {
            match c {
                '0'..='9' => {
                    if n < 9 {
                        digits[n] = c as u8;
                    }
                    n += 1;
                }
                ' ' | '.' | '-' => {}
                _ => {
                    digits.zeroize();
                    return Err(BsnError::InvalidCharacters);
                }
            }
        }
        let result = match n {
            9 => Ok(()),
            8 => {
                digits.copy_within(0..8, 1);
                digits[0] = b'0';
                Ok(())
            }
            other => Err(BsnError::WrongLength(other)),
        }
        .and_then(|()| check(&digits).map(|()| Bsn(digits)));
        digits.zeroize();
        result
    }

    /// The nine ASCII digits, for keyed hashing only.
    pub fn digits(&self) -> &[u8; 9] {
        &self.0
    }
}

/// The elfproef on nine ASCII digits.
fn check(d: &[u8; 9]) -> Result<(), BsnError> {
    if d.iter().all(|&c| c == b'0') {
        return Err(BsnError::AllZero);
    }
    let mut sum: i64 = 0;
    for (i, &c) in d.iter().enumerate() {
        let v = i64::from(c - b'0');
        let w = if i == 8 { -1 } else { 9 - i as i64 };
        sum += w * v;
    }
    if sum % 11 == 0 {
        Ok(())
    } else {
        Err(BsnError::Elfproef)
    }
}

/// True when the nine-digit number passes the elfproef (used by the generator and tests).
pub fn passes_elfproef(n: u32) -> bool {
    if n >= 1_000_000_000 {
        return false;
    }
    let s = format!("{n:09}");
    let mut d = [0u8; 9];
    d.copy_from_slice(s.as_bytes());
    check(&d).is_ok()
}

impl fmt::Debug for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bsn(<redacted>)")
    }
}

impl fmt::Display for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<BSN redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(n: u32) -> bool {
        let d: Vec<i64> = format!("{n:09}")
            .bytes()
            .map(|b| i64::from(b - b'0'))
            .collect();
        let s =
            9 * d[0] + 8 * d[1] + 7 * d[2] + 6 * d[3] + 5 * d[4] + 4 * d[5] + 3 * d[6] + 2 * d[7]
                - d[8];
        n != 0 && s % 11 == 0
    }

    #[test]
    fn known_valid_and_invalid_numbers_are_told_apart() {
        assert!(Bsn::parse("111222333").is_ok());
        assert!(Bsn::parse("123456782").is_ok());
        assert_eq!(Bsn::parse("123456789"), Err(BsnError::Elfproef));
        assert_eq!(Bsn::parse("000000000"), Err(BsnError::AllZero));
        assert_eq!(Bsn::parse("12345"), Err(BsnError::WrongLength(5)));
        assert_eq!(Bsn::parse("12345678a"), Err(BsnError::InvalidCharacters));
    }

    #[test]
    fn separators_are_stripped_and_eight_digits_are_padded() {
        let nine = Bsn::parse("012345672").map(|b| *b.digits());
        assert!(nine.is_ok());
        assert_eq!(Bsn::parse("1234.56-72").map(|b| *b.digits()), nine);
        assert_eq!(Bsn::parse("12 34 56 72").map(|b| *b.digits()), nine);
    }

    #[test]
    fn debug_and_display_never_show_the_digits() {
        let b = Bsn::parse("123456782").expect("valid");
        assert!(!format!("{b:?}").contains("123456782"));
        assert!(!format!("{b}").contains("1234"));
    }

    proptest! {
        #[test]
        fn elfproef_accepts_exactly_the_valid_numbers(n in 0u32..1_000_000_000) {
            let s = format!("{n:09}");
            prop_assert_eq!(Bsn::parse(&s).is_ok(), reference(n));
            prop_assert_eq!(passes_elfproef(n), reference(n));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,40}") {
            let _ = Bsn::parse(&s);
        }

        #[test]
        fn eight_digit_input_equals_its_zero_padded_form(n in 0u32..100_000_000) {
            let eight = format!("{n:08}");
            let nine = format!("0{eight}");
            prop_assert_eq!(
                Bsn::parse(&eight).map(|b| *b.digits()),
                Bsn::parse(&nine).map(|b| *b.digits())
            );
        }
    }

    #[test]
    fn about_one_in_eleven_random_numbers_is_valid() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let total = 200_000;
        let valid = (0..total)
            .filter(|_| passes_elfproef(rng.random_range(0..1_000_000_000)))
            .count();
        let share = valid as f64 / total as f64;
        assert!((share - 1.0 / 11.0).abs() < 0.005, "share {share}");
    }
}
