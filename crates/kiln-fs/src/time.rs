//! Calendar time (UTC) of seconds since the Unix epoch: the dates that archives, file systems
//! and documents carry (ISO 9660 and FAT records, image configs, SBOMs, provenance), from one
//! conversion.

/// A UTC date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year (1970 to 9999).
    pub year: i32,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 31.
    pub day: u8,
    /// The hour, 0 to 23.
    pub hour: u8,
    /// The minute, 0 to 59.
    pub minute: u8,
    /// The second, 0 to 59.
    pub second: u8,
}

/// The last second [`civil`] represents: 9999-12-31T23:59:59Z.
const MAX_SECS: u64 = 253_402_300_799;

/// The UTC date and time `secs` seconds after 1970-01-01T00:00:00Z; times after the year 9999
/// are taken as its last second.
pub fn civil(secs: u64) -> Civil {
    let clamped = i64::try_from(secs.min(MAX_SECS)).unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(clamped)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Civil {
        year: t.year(),
        month: u8::from(t.month()),
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
    }
}

/// `secs` since the epoch as RFC 3339 UTC with whole seconds: `2023-11-14T22:13:20Z`.
pub fn rfc3339(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(
            civil(1_700_000_000),
            Civil {
                year: 2023,
                month: 11,
                day: 14,
                hour: 22,
                minute: 13,
                second: 20
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn fields_in_range(secs in proptest::num::u64::ANY) {
            let c = civil(secs);
            proptest::prop_assert!((1970..=9999).contains(&c.year));
            proptest::prop_assert!((1..=12).contains(&c.month) && (1..=31).contains(&c.day));
            proptest::prop_assert!(c.hour < 24 && c.minute < 60 && c.second < 60);
        }
    }
}
