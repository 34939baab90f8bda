//! Market vocabulary shared by every module: instruments, timeframes, candles, quotes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Ts;

/// An OANDA-style instrument name such as `EUR_USD`.
///
/// Stored inline (no heap) so candles and events are `Copy`-cheap on the hot path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instrument {
    len: u8,
    bytes: [u8; 15],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not an instrument name: expected BASE_QUOTE in capitals, e.g. EUR_USD")]
pub struct BadInstrument(pub String);

impl Instrument {
    pub fn new(s: &str) -> Result<Self, BadInstrument> {
        let bad = || BadInstrument(s.to_string());
        let (base, quote) = s.split_once('_').ok_or_else(bad)?;
        let part_ok =
            |p: &str| (2..=7).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !part_ok(base) || !part_ok(quote) {
            return Err(bad());
        }
        let mut bytes = [0u8; 15];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Instrument { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from validated ASCII.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }

    /// The size of one pip in price: 0.01 for JPY quotes, 0.01 for gold,
    /// 0.0001 for silver and other FX; 1 for index and other CFDs, whose
    /// base is not a three-letter currency or metal (OANDA's `pipLocation`).
    pub fn pip(&self) -> f64 {
        let (base, quote) = self.as_str().split_once('_').unwrap_or(("", ""));
        match (base, quote) {
            (_, "JPY") | ("XAU", _) => 0.01,
            ("XAG", _) => 0.0001,
            (b, _) if b.len() == 3 && b.bytes().all(|c| c.is_ascii_uppercase()) => 0.0001,
            _ => 1.0,
        }
    }

    pub fn quote_currency(&self) -> &str {
        self.as_str().split_once('_').map_or("", |(_, q)| q)
    }

    /// Price decimals quoted by brokers: 3 for JPY-quoted pairs, else 5.
    pub fn decimals(&self) -> u32 {
        if self.quote_currency() == "JPY" { 3 } else { 5 }
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl FromStr for Instrument {
    type Err = BadInstrument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Instrument::new(s)
    }
}

impl Serialize for Instrument {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Instrument {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Instrument::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Candle granularities pipwatch accepts (OANDA's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timeframe {
    M1,
    M2,
    M4,
    M5,
    M10,
    M15,
    M30,
    H1,
    H2,
    H3,
    H4,
    H6,
    H8,
    H12,
    D,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a timeframe: use one of M1 M2 M4 M5 M10 M15 M30 H1 H2 H3 H4 H6 H8 H12 D")]
pub struct BadTimeframe(pub String);

impl Timeframe {
    pub const ALL: [Timeframe; 15] = [
        Timeframe::M1,
        Timeframe::M2,
        Timeframe::M4,
        Timeframe::M5,
        Timeframe::M10,
        Timeframe::M15,
        Timeframe::M30,
        Timeframe::H1,
        Timeframe::H2,
        Timeframe::H3,
        Timeframe::H4,
        Timeframe::H6,
        Timeframe::H8,
        Timeframe::H12,
        Timeframe::D,
    ];

    pub fn seconds(self) -> i64 {
        use Timeframe::*;
        match self {
            M1 => 60,
            M2 => 120,
            M4 => 240,
            M5 => 300,
            M10 => 600,
            M15 => 900,
            M30 => 1800,
            H1 => 3600,
            H2 => 7200,
            H3 => 10_800,
            H4 => 14_400,
            H6 => 21_600,
            H8 => 28_800,
            H12 => 43_200,
            D => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        use Timeframe::*;
        match self {
            M1 => "M1",
            M2 => "M2",
            M4 => "M4",
            M5 => "M5",
            M10 => "M10",
            M15 => "M15",
            M30 => "M30",
            H1 => "H1",
            H2 => "H2",
            H3 => "H3",
            H4 => "H4",
            H6 => "H6",
            H8 => "H8",
            H12 => "H12",
            D => "D",
        }
    }

    pub fn from_seconds(secs: i64) -> Option<Timeframe> {
        Timeframe::ALL.into_iter().find(|t| t.seconds() == secs)
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Timeframe {
    type Err = BadTimeframe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timeframe::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| BadTimeframe(s.to_string()))
    }
}

/// One series: an instrument at a timeframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
}

impl SeriesKey {
    pub fn new(instrument: Instrument, timeframe: Timeframe) -> Self {
        SeriesKey { instrument, timeframe }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.instrument, self.timeframe)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A closed candle. `time` is the candle's start, as OANDA reports it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub time: Ts,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Candle {
    pub fn key(&self) -> SeriesKey {
        SeriesKey::new(self.instrument, self.timeframe)
    }

    /// Whether the prices are sane: finite, positive, open and close within
    /// [low, high]. One combined test keeps the valid case cheap: every
    /// comparison with a NaN is false, and `h < inf` with everything in
    /// [l, h] bounds the rest.
    #[inline(always)]
    pub fn prices_ok(&self) -> bool {
        let (o, h, l, c) = (self.open, self.high, self.low, self.close);
        // `low <= open <= high` implies `high >= low`, and a NaN fails every
        // comparison. `&` rather than `&&`: one branch instead of six.
        (l > 0.0) & (h < f64::INFINITY) & (o >= l) & (o <= h) & (c >= l) & (c <= h)
    }

    /// Checks the prices alone (not the time order, which needs the series),
    /// naming what is wrong.
    pub fn check_prices(&self) -> Result<(), BadCandle> {
        let (o, h, l, c) = (self.open, self.high, self.low, self.close);
        if self.prices_ok() {
            return Ok(());
        }
        for (name, v) in [("open", o), ("high", h), ("low", l), ("close", c)] {
            if !v.is_finite() {
                return Err(BadCandle::NotFinite { field: name });
            }
            if v <= 0.0 {
                return Err(BadCandle::NotPositive { field: name, value: v });
            }
        }
        if h < l {
            return Err(BadCandle::HighBelowLow { high: h, low: l });
        }
        let field = if o < l || o > h { "open" } else { "close" };
        let value = if field == "open" { o } else { c };
        Err(BadCandle::OutsideRange { field, value, low: l, high: h })
    }
}

/// Why a candle was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BadCandle {
    #[error("{field} is not a finite number")]
    NotFinite { field: &'static str },
    #[error("{field} {value} is not positive")]
    NotPositive { field: &'static str, value: f64 },
    #[error("high {high} is below low {low}")]
    HighBelowLow { high: f64, low: f64 },
    #[error("{field} {value} is outside the candle's range [{low}, {high}]")]
    OutsideRange { field: &'static str, value: f64, low: f64, high: f64 },
    #[error("time {time} is not after the series' last candle {last}")]
    NotAfter { time: Ts, last: Ts },
}

/// A live price between candle closes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub instrument: Instrument,
    pub time: Ts,
    pub bid: f64,
    pub ask: f64,
}

/// How bad an alert is. Ordered: a route's `min_severity` takes that and worse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rounds a price to the instrument's quoted precision.
pub fn round_price(instrument: Instrument, p: f64) -> f64 {
    let scale = 10f64.powi(instrument.decimals() as i32);
    (p * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instrument_names() {
        assert_eq!(Instrument::new("EUR_USD").map(|i| i.to_string()), Ok("EUR_USD".to_string()));
        assert!(Instrument::new("SPX500_USD").is_ok());
        for bad in ["eur_usd", "EURUSD", "EUR_", "_USD", "EUR-USD", "EUR_USD_X", ""] {
            assert!(Instrument::new(bad).is_err(), "{bad} accepted");
        }
        let jpy = Instrument::new("USD_JPY").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((jpy.decimals(), jpy.pip()), (3, 0.01));
    }

    #[test]
    fn timeframes_round_trip() {
        for tf in Timeframe::ALL {
            assert_eq!(tf.as_str().parse::<Timeframe>(), Ok(tf));
            assert_eq!(Timeframe::from_seconds(tf.seconds()), Some(tf));
        }
        assert!("S5".parse::<Timeframe>().is_err());
    }

    fn candle(o: f64, h: f64, l: f64, c: f64) -> Candle {
        Candle {
            instrument: Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}")),
            timeframe: Timeframe::H1,
            time: Ts(0),
            open: o,
            high: h,
            low: l,
            close: c,
            volume: 0.0,
        }
    }

    #[test]
    fn bad_prices_are_named() {
        assert_eq!(candle(1.0, 1.2, 0.9, 1.1).check_prices(), Ok(()));
        assert_eq!(candle(f64::NAN, 1.2, 0.9, 1.1).check_prices(), Err(BadCandle::NotFinite { field: "open" }));
        assert_eq!(candle(1.0, f64::INFINITY, 0.9, 1.1).check_prices(), Err(BadCandle::NotFinite { field: "high" }));
        assert_eq!(candle(1.0, 1.2, 0.0, 1.1).check_prices(), Err(BadCandle::NotPositive { field: "low", value: 0.0 }));
        assert_eq!(candle(1.0, 0.8, 0.9, 0.85).check_prices(), Err(BadCandle::HighBelowLow { high: 0.8, low: 0.9 }));
        assert!(matches!(
            candle(1.3, 1.2, 0.9, 1.1).check_prices(),
            Err(BadCandle::OutsideRange { field: "open", .. })
        ));
        assert!(matches!(
            candle(1.0, 1.2, 0.9, 0.8).check_prices(),
            Err(BadCandle::OutsideRange { field: "close", .. })
        ));
    }
}
