//! Kubernetes resource quantities (`2Gi`, `500M`, `1.5Ti`, `100e6`) as bytes.

use std::fmt;

/// Parses a quantity into a whole number of units (bytes for storage),
/// rounding fractions up as Kubernetes does. Errors name the bad text.
pub fn parse(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("`{text}` is not a Kubernetes quantity (examples: 10Gi, 500M, 1.5Ti)");
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number = number.trim_start_matches('+');
    let (multiplier, exponent): (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // value = digits * 10^(exponent - frac_len) * multiplier, rounded up.
    let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
    let scale = exponent - frac.len() as i32;
    let too_big = || format!("`{text}` is larger than Steward can represent");
    let scaled = digits.checked_mul(multiplier).ok_or_else(too_big)?;
    let value = if scale >= 0 {
        10u128
            .checked_pow(scale as u32)
            .and_then(|p| scaled.checked_mul(p))
            .ok_or_else(too_big)?
    } else {
        let divisor = 10u128.checked_pow((-scale) as u32).ok_or_else(too_big)?;
        scaled.div_ceil(divisor)
    };
    u64::try_from(value).map_err(|_| too_big())
}

/// Bytes for people: `12 GiB`, `1.5 TiB`, `512 MiB`, `900 B`. A `Display`
/// value, so refusal texts format it in place without a String of its own;
/// integer arithmetic only: exact float formatting runs a bignum algorithm
/// that is slow inside Wasm, and so does 128-bit division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let bytes = self.0;
        let mut unit = 0;
        while unit < UNITS.len() - 1 && bytes >> (10 * (unit + 1)) > 0 {
            unit += 1;
        }
        if unit == 0 {
            return write!(f, "{bytes} B");
        }
        // Whole units, then the remainder rounded to tenths (0..=10), so
        // nothing overflows.
        let shift = 10 * unit;
        let size = 1u64 << shift;
        let tenths = ((bytes & (size - 1)) * 10 + size / 2) >> shift;
        let (whole, tenth) = match tenths {
            10 => ((bytes >> shift) + 1, 0),
            t => (bytes >> shift, t),
        };
        if tenth == 0 {
            write!(f, "{whole} {}", UNITS[unit])
        } else {
            write!(f, "{whole}.{tenth} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse("2Gi"), Ok(2 << 30));
        assert_eq!(parse("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse("500M"), Ok(500_000_000));
        assert_eq!(parse("100e6"), Ok(100_000_000));
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("1500m"), Ok(2));
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        for bad in ["", "-1Gi", "Gi", "1.2.3", "12Qi", "1e999", "99999999Ei"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(Bytes(12 << 30).to_string(), "12 GiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Bytes(900).to_string(), "900 B");
        assert_eq!(Bytes(1024).to_string(), "1 KiB");
        assert_eq!(Bytes((1 << 30) + (1 << 30) / 25).to_string(), "1 GiB");
        assert_eq!(Bytes((2 << 30) - (1 << 30) / 25).to_string(), "2 GiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16384 PiB");
    }
}
