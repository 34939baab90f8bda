//! `pipwatch backtest`: every signal over CSV history as a paper trade, by the
//! rules live tracking uses (`engine::trade`), and the figures of the result.
//! No clock, no network, no data directory.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Instant;

use serde::Serialize;

use crate::engine::trade::{Book, Fill, Rules, Summary as Figures, Tally};
use crate::engine::{Engine, Phase, StrategySet};
use crate::event::{Event, ExitReason, Trade};
use crate::market::csv::{BadRow, CsvInput};
use crate::replay::{Flow, ReplayError, Summary, drive};
use crate::time::Ts;
use crate::types::SeriesKey;

pub struct Backtest<'a> {
    pub inputs: &'a [CsvInput],
    pub strategies: StrategySet,
    pub fill: Fill,
    /// In pips, charged half at entry and half at exit.
    pub spread_pips: f64,
    /// Trades open only on signals from this candle time on; earlier candles
    /// warm the indicators up.
    pub from: Option<Ts>,
    /// No candle after this time is read.
    pub to: Option<Ts>,
    pub progress: bool,
}

/// What a backtest found: every trade (closed, then each series' still-open
/// one), and the figures per series and in all.
#[derive(Debug, Default)]
pub struct Report {
    pub trades: Vec<Trade>,
    pub series: Vec<(SeriesKey, Figures)>,
    pub total: Figures,
    pub read: Summary,
}

impl Backtest<'_> {
    /// Every input's trades and their figures. Several series are tested on
    /// every core; the report is the same (it is ordered by exit time).
    pub fn run(self, on_bad_row: &mut dyn FnMut(&BadRow)) -> Result<Report, ReplayError> {
        let started = Instant::now();
        let groups = crate::replay::by_series(self.inputs);
        let workers = crate::replay::workers_for(groups.len());
        let mut read = Summary::default();
        let mut trades = Vec::new();
        if workers > 1 {
            let work = |files: &[CsvInput], stop: &std::sync::atomic::AtomicBool| {
                let mut bad = Vec::new();
                let mut read = Summary::default();
                let made = self.trades(files, 1, &mut |b| bad.push(b.clone()), &mut read, Some(stop))?;
                Ok(crate::replay::Done { made, read, bad })
            };
            let mut take = |made: Vec<Trade>| {
                trades.extend(made);
                Ok(Flow::Next)
            };
            crate::replay::in_parallel(&groups, workers, self.progress, on_bad_row, &mut read, &work, &mut take)?;
        } else {
            trades = self.trades(self.inputs, 0, on_bad_row, &mut read, None)?;
        }
        read.elapsed = started.elapsed();
        Ok(report(trades, read))
    }

    /// The trades of `inputs` read in turn (closed, then each series'
    /// still-open one).
    fn trades(
        &self,
        inputs: &[CsvInput],
        threads: usize,
        on_bad_row: &mut dyn FnMut(&BadRow),
        read: &mut Summary,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<Trade>, ReplayError> {
        let engine = Engine::new(self.strategies.clone());
        let mut tester = Tester::new(engine, self.fill, self.spread_pips, self.from, self.to);
        let progress = self.progress && stop.is_none();
        drive(inputs, progress, threads, on_bad_row, read, &mut |candle, read| {
            if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
                return Ok(Flow::Stop);
            }
            tester.on_candle(candle, read);
            Ok(Flow::Next)
        })?;
        Ok(tester.finish())
    }
}

/// The engine and each series' paper trade over candles in order: one
/// backtest, whether its candles come from a file (`backtest`) or from
/// memory (each combination of a sweep).
pub(crate) struct Tester {
    engine: Engine,
    /// Each series' book, its last candle and its pip, in the order first
    /// seen; `at` is the last one used (history comes a series at a time,
    /// and a sweep runs this per candle per combination).
    books: Vec<(SeriesKey, Book, Option<crate::types::Candle>, f64)>,
    at: usize,
    events: Vec<Event>,
    fill: Fill,
    spread_pips: f64,
    from: Ts,
    to: Ts,
    trades: Vec<Trade>,
    /// Adding each closed trade up as it closes, instead of keeping it: one
    /// series' trades close in time order, which is the order the figures
    /// are added up in, so a sweep of one series keeps no trades at all.
    tally: Option<Tally>,
}

impl Tester {
    pub(crate) fn new(engine: Engine, fill: Fill, spread_pips: f64, from: Option<Ts>, to: Option<Ts>) -> Tester {
        Tester {
            engine,
            books: Vec::new(),
            at: 0,
            events: Vec::with_capacity(4),
            fill,
            spread_pips,
            from: from.unwrap_or(Ts(i64::MIN)),
            to: to.unwrap_or(Ts(i64::MAX)),
            trades: Vec::new(),
            tally: None,
        }
    }

    /// A tester of one series that adds its trades up as they close.
    pub(crate) fn tallying(mut self) -> Tester {
        self.tally = Some(Tally::default());
        self
    }

    /// The figures of the closed trades: [`report`]'s total.
    pub(crate) fn figures(self) -> Figures {
        match self.tally {
            Some(t) => t.summary(),
            None => report(self.finish(), Summary::default()).total,
        }
    }

    #[inline]
    pub(crate) fn on_candle(&mut self, candle: &crate::types::Candle, read: &mut Summary) {
        if candle.time > self.to {
            // Past the range: not applied (another file may still be in it).
            return;
        }
        self.events.clear();
        let outcome = self.engine.apply_signals_into(candle, Phase::Live, &mut self.events);
        if !outcome.accepted {
            return;
        }
        read.candles += 1;
        read.signals += u64::from(outcome.signal);
        let from = self.from;
        let signal = self.events.iter().find_map(|e| match e {
            Event::Signal(s) if s.time >= from => Some(s),
            _ => None,
        });
        let key = candle.key();
        if self.books.get(self.at).is_none_or(|b| b.0 != key) {
            self.at = match self.books.iter().position(|b| b.0 == key) {
                Some(at) => at,
                None => {
                    self.books.push((key, Book::default(), None, candle.instrument.pip()));
                    self.books.len() - 1
                }
            };
        }
        let (_, book, last, pip) = &mut self.books[self.at];
        let rules = Rules { fill: self.fill, spread: self.spread_pips * *pip };
        book.on_candle_into(candle, signal, &rules, *pip, &mut self.trades);
        *last = Some(*candle);
        if let Some(tally) = &mut self.tally {
            for t in self.trades.drain(..) {
                tally.add(&t);
            }
        }
    }

    /// The closed trades, then each series' open one marked at its last candle.
    pub(crate) fn finish(mut self) -> Vec<Trade> {
        // By series, as the report lists open trades.
        self.books.sort_by_key(|b| b.0);
        for (_, book, last, pip) in &self.books {
            let Some(last) = last else { continue };
            let rules = Rules { fill: self.fill, spread: self.spread_pips * pip };
            self.trades.extend(book.mark_open(last, &rules, *pip));
        }
        self.trades
    }
}

pub(crate) fn report(trades: Vec<Trade>, read: Summary) -> Report {
    let mut per: BTreeMap<SeriesKey, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    // In exit order, so drawdowns and streaks are as they happened.
    let mut closed: Vec<&Trade> = trades.iter().filter(|t| t.exit_reason != ExitReason::Open).collect();
    closed.sort_by_key(|t| (t.exit_time, t.entry_time));
    for t in closed {
        per.entry(SeriesKey::new(t.instrument, t.timeframe)).or_default().add(t);
        total.add(t);
    }
    let series = per.into_iter().map(|(k, t)| (k, t.summary())).collect();
    Report { trades, series, total: total.summary(), read }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    // A trade is written by `Trade::write_json`, as serde would write `Trade(&Trade)` here.
    Summary {
        instrument: &'a str,
        /// None for the total over several timeframes.
        timeframe: Option<&'a str>,
        #[serde(flatten)]
        figures: &'a Figures,
    },
}

impl Report {
    /// The trades (in the order they closed, open ones last), then a summary
    /// per series and one for `"instrument":"ALL"`, as JSON lines.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        let line = |out: &mut dyn Write, r: &Record<'_>| -> io::Result<()> {
            serde_json::to_writer(&mut *out, r).map_err(io::Error::other)?;
            out.write_all(b"\n")
        };
        for t in self.in_order() {
            t.write_json("trade", out)?;
            out.write_all(b"\n")?;
        }
        for (k, f) in &self.series {
            let summary = Record::Summary {
                instrument: k.instrument.as_str(),
                timeframe: Some(k.timeframe.as_str()),
                figures: f,
            };
            line(out, &summary)?;
        }
        line(out, &Record::Summary { instrument: "ALL", timeframe: self.one_timeframe(), figures: &self.total })
    }

    /// The trades as CSV, one row each.
    pub fn write_csv(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "id,instrument,timeframe,side,entry_time,entry,stop_loss,take_profit,exit_time,exit,exit_reason,gap,pips,r,bars,mae_r,mfe_r"
        )?;
        for t in self.in_order() {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                t.id,
                t.instrument,
                t.timeframe,
                t.side.as_str(),
                t.entry_time,
                t.entry,
                t.stop_loss,
                t.take_profit,
                t.exit_time,
                t.exit,
                t.exit_reason.as_str(),
                t.gap,
                t.pips,
                t.r,
                t.bars,
                t.mae_r,
                t.mfe_r
            )?;
        }
        Ok(())
    }

    fn in_order(&self) -> Vec<&Trade> {
        let mut all: Vec<&Trade> = self.trades.iter().collect();
        all.sort_by_key(|t| (t.exit_reason == ExitReason::Open, t.exit_time, t.entry_time));
        all
    }

    fn one_timeframe(&self) -> Option<&str> {
        let mut tfs = self.series.iter().map(|(k, _)| k.timeframe);
        let first = tfs.next()?;
        tfs.all(|t| t == first).then_some(first.as_str())
    }
}

pub mod table;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::trade::Tally;
    use crate::types::{Instrument, Side, Timeframe};

    fn trade(instrument: &str, exit: i64, r: f64, reason: ExitReason) -> Trade {
        Trade {
            id: format!("{instrument}:{exit}"),
            instrument: Instrument::new(instrument).unwrap(),
            timeframe: Timeframe::H1,
            side: Side::Buy,
            entry_time: Ts(exit - 3600),
            entry: 1.0,
            stop_loss: 0.99,
            take_profit: 1.02,
            exit_time: Ts(exit),
            exit: 1.0 + r / 100.0,
            exit_reason: reason,
            gap: false,
            pips: r * 100.0,
            r,
            bars: 1,
            mae_r: 0.0,
            mfe_r: 0.0,
        }
    }

    #[test]
    fn the_total_is_every_series_closed_trades_in_exit_order() {
        let trades = vec![
            trade("EUR_USD", 3, 2.0, ExitReason::Target),
            trade("GBP_USD", 1, -1.0, ExitReason::Stop),
            trade("EUR_USD", 2, -1.0, ExitReason::Stop),
            trade("GBP_USD", 9, 5.0, ExitReason::Open),
        ];
        let r = report(trades.clone(), Summary::default());
        assert_eq!(r.series.len(), 2);
        assert_eq!(r.total.trades, 3, "the open trade is listed, not counted");
        let mut by_hand = Tally::default();
        for t in [&trades[1], &trades[2], &trades[0]] {
            by_hand.add(t);
        }
        assert_eq!(r.total, by_hand.summary());
        assert_eq!(r.total.max_consecutive_losses, 2, "GBP at 1 then EUR at 2: two losses in a row");
        let mut json = Vec::new();
        r.write_json(&mut json).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["trade", "trade", "trade", "trade", "summary", "summary", "summary"]);
        assert_eq!(lines[3]["exit_reason"], "open", "open trades last");
        assert_eq!((lines[6]["instrument"].as_str(), lines[6]["timeframe"].as_str()), (Some("ALL"), Some("H1")));
        assert_eq!(lines[6]["trades"], 3);
    }
}
