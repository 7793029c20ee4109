//! Human-friendly config values: byte sizes ("64MiB", "1 GB", 4096) and durations ("30s", "5m", 2.5).

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::time::Duration;

/// A size in bytes, written in the config as an integer or a string with a unit (`"512KiB"`, `"10 GB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size like \"64MiB\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
        };
        if !number.is_finite() || number < 0.0 {
            return Err(format!("`{text}` is not a size like \"64MiB\""));
        }
        let bytes = (number * factor as f64).round();
        if bytes >= u64::MAX as f64 {
            // `as u64` would quietly make it 16 EiB.
            return Err(format!("`{text}` is more than 16 EiB"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 { write!(f, "{} B", self.0) } else { write!(f, "{value:.1} {}", UNITS[unit]) }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

/// A duration, written in the config as seconds (`30`, `2.5`) or with a unit (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like \"30s\""))?;
        let factor = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown duration unit `{other}` (use ms, s, m, h)")),
        };
        Duration::try_from_secs_f64(number * factor)
            .map(Seconds)
            .map_err(|_| format!("`{text}` is not a duration like \"30s\""))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(Seconds(Duration::from_secs(n))),
            Raw::Float(x) => Duration::try_from_secs_f64(x).map(Seconds).map_err(de::Error::custom),
            Raw::Text(s) => Seconds::parse(&s).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1.5 GiB"), Ok(ByteSize(3 << 29)));
        assert_eq!(ByteSize::parse("10GB"), Ok(ByteSize(10_000_000_000)));
        assert!(ByteSize::parse("ten").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(Seconds::parse("30s"), Ok(Seconds(Duration::from_secs(30))));
        assert_eq!(Seconds::parse("500ms"), Ok(Seconds(Duration::from_millis(500))));
        assert_eq!(Seconds::parse("2m"), Ok(Seconds(Duration::from_secs(120))));
        assert!(Seconds::parse("soon").is_err());
    }
}
