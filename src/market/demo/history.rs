//! Recorded candles a demo plays instead of its random walk
//! (`[market.demo] history`): the EUR/USD hourly history shipped in the
//! binary, and the `INSTRUMENT.csv` files of a directory the user names.

use std::io::Cursor;
use std::path::Path;

use crate::market::csv::{self, CsvCandles};
use crate::types::{Candle, Instrument, Timeframe};

/// The hourly EUR/USD candles of 2017 (ask side), MIT-licensed: the notice
/// is in `data/README.md` and README.md.
const BUNDLED: &[u8] = include_bytes!("../../../data/EUR_USD_H1_2017_ask.csv");

/// One pair's recorded candles, sorted and checked by the CSV reader.
#[derive(Clone, Debug)]
pub struct History {
    pub instrument: Instrument,
    /// The candles' own granularity; a pair's longer timeframes are built from it.
    pub timeframe: Timeframe,
    pub candles: Vec<Candle>,
    /// Where they come from, for the feed's message and the log.
    pub origin: String,
}

impl History {
    /// "EUR_USD H1 from the bundled history, 2017-01-01 to 2017-12-29".
    pub fn describe(&self) -> String {
        let day = |c: Option<&Candle>| {
            let mut buf = [0u8; 20];
            c.map(|c| c.time.format_into(&mut buf)[..10].to_string()).unwrap_or_default()
        };
        format!(
            "{} {} from {}, {} to {}",
            self.instrument,
            self.timeframe,
            self.origin,
            day(self.candles.first()),
            day(self.candles.last())
        )
    }
}

/// The bundled EUR/USD history.
pub fn bundled() -> Result<History, String> {
    let eur = Instrument::new("EUR_USD").map_err(|e| e.to_string())?;
    let rows = CsvCandles::from_reader(Box::new(Cursor::new(BUNDLED)), "bundled history".into(), eur, Timeframe::H1)
        .map_err(|e| e.to_string())?;
    Ok(History { instrument: eur, timeframe: Timeframe::H1, candles: read(rows), origin: "the bundled history".into() })
}

/// The histories `setting` names, for the configured `instruments` only:
/// `synthetic` none, `bundled` the shipped EUR/USD, a directory (or one
/// `INSTRUMENT.csv` file) its pairs' files and the shipped EUR/USD where it
/// has none. The error names what is wrong, for `market.demo.history`.
pub fn load(setting: &str, instruments: &[Instrument]) -> Result<Vec<History>, String> {
    let wanted = |i: Instrument| instruments.contains(&i);
    let mut out = Vec::new();
    match setting.trim() {
        "synthetic" => return Ok(out),
        "bundled" => {}
        path => {
            let path = Path::new(path);
            if !path.exists() {
                return Err(format!(
                    "'{}' does not exist: use \"synthetic\", \"bundled\" or a directory of INSTRUMENT.csv files",
                    path.display()
                ));
            }
            let inputs = csv::resolve(path, None, None, (None, Timeframe::H1)).map_err(|e| e.to_string())?;
            for input in inputs {
                if !wanted(input.instrument) {
                    tracing::info!(file = %input.path.display(), "{} is not in market.instruments: not played", input.instrument);
                    continue;
                }
                // The spacing of the rows says what they are; a name's token is a claim.
                let timeframe = csv::infer_timeframe(&input.path).unwrap_or(input.timeframe);
                let rows =
                    CsvCandles::open_with(&input.path, input.instrument, timeframe, 1).map_err(|e| e.to_string())?;
                let origin = input.path.display().to_string();
                let history = History { instrument: input.instrument, timeframe, candles: read(rows), origin };
                if history.candles.is_empty() {
                    return Err(format!("{}: no candles could be read", history.origin));
                }
                match out.iter_mut().find(|h: &&mut History| h.instrument == history.instrument) {
                    // Two files for a pair: the finer one, the longer timeframes are built from it.
                    Some(kept) if kept.timeframe.seconds() <= history.timeframe.seconds() => {
                        tracing::warn!("{} is not played: {} is finer", history.describe(), kept.describe());
                    }
                    Some(kept) => {
                        tracing::warn!("{} is not played: {} is finer", kept.describe(), history.describe());
                        *kept = history;
                    }
                    None => out.push(history),
                }
            }
        }
    }
    let eur = bundled()?;
    if wanted(eur.instrument) && !out.iter().any(|h| h.instrument == eur.instrument) {
        out.push(eur);
    }
    Ok(out)
}

/// Every good row; bad ones are logged (the first few in full) and skipped,
/// as a CSV feed does.
fn read(rows: CsvCandles) -> Vec<Candle> {
    let mut candles = Vec::new();
    let mut bad = 0u64;
    for row in rows {
        match row {
            Ok(c) => candles.push(c),
            Err(row) => {
                bad += 1;
                if bad <= 3 {
                    tracing::warn!(file = %row.path, line = row.line, problem = %row.message, "bad CSV row skipped");
                }
            }
        }
    }
    if bad > 3 {
        tracing::warn!(bad, "bad CSV rows skipped in all");
    }
    candles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_history_is_the_shipped_file() {
        let h = bundled().unwrap();
        assert_eq!(h.candles.len(), 6225);
        assert_eq!(h.timeframe, Timeframe::H1);
        let first = h.candles[0];
        assert_eq!((first.open, first.high, first.low, first.close), (1.05236, 1.05253, 1.05221, 1.05227));
        assert_eq!(first.time, crate::time::Ts::from_ymd_hms(2017, 1, 1, 22, 0, 0).unwrap());
        assert!(h.describe().contains("2017-01-01 to 2017-12-29"), "{}", h.describe());
    }

    #[test]
    fn settings_pick_the_histories() {
        let eur = Instrument::new("EUR_USD").unwrap();
        let gbp = Instrument::new("GBP_USD").unwrap();
        assert!(load("synthetic", &[eur]).unwrap().is_empty());
        assert_eq!(load("bundled", &[eur, gbp]).unwrap().len(), 1);
        // The bundled pair is only played when it is configured.
        assert!(load("bundled", &[gbp]).unwrap().is_empty());
        let err = load("/nowhere/at/all", &[eur]).unwrap_err();
        assert!(err.contains("/nowhere/at/all") && err.contains("bundled"), "{err}");
    }
}
