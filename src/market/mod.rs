//! Market sources: demo, CSV and OANDA behind one trait. A source sends closed
//! candles (and live quotes where it has them) to the engine task over a
//! bounded channel; it never touches the store or the hub.

pub mod csv;
pub mod demo;
pub mod oanda;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind};
use crate::engine::{Last, Phase, StrategySet};
use crate::event::{FeedState, FeedStatus};
use crate::types::{Candle, Quote, SeriesKey};

#[derive(Clone, Debug, PartialEq)]
pub enum MarketEvent {
    Candle { candle: Candle, phase: Phase },
    Quote(Quote),
    Status(FeedStatus),
    // Data the source itself could not make a candle of (a CSV row that
    // does not read): published as it is, like the engine's rejections.
    Rejected(crate::event::Rejected),
}

/// What a source gets to run with.
pub struct SourceCtx {
    pub tx: mpsc::Sender<MarketEvent>,
    pub shutdown: CancellationToken,
    /// Every configured series, in config order.
    pub series: Vec<SeriesKey>,
    /// The last stored candle of each series that has one: resume after it.
    pub resume: HashMap<SeriesKey, Last>,
    pub strategies: StrategySet,
}

impl SourceCtx {
    /// Sends, or returns false when the engine has gone (shutting down).
    pub async fn send(&self, e: MarketEvent) -> bool {
        self.tx.send(e).await.is_ok()
    }

    pub async fn status(&self, source: &str, state: FeedState, message: Option<String>) -> bool {
        self.send(MarketEvent::Status(FeedStatus::new(source.to_string(), state, message))).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The credentials were refused: retrying cannot help.
    #[error("{0}")]
    Auth(String),
    /// A request the source cannot fix by retrying (bad instrument, bad account).
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Csv(#[from] csv::CsvError),
    /// The configured CSV path cannot be read.
    #[error("market.csv.path: {0}. Set it in the config or with --source csv:PATH")]
    CsvPath(csv::CsvError),
}

pub type SourceFuture = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

pub trait MarketSource: Send {
    /// `demo`, `csv` or `oanda`: shown in the header and in feed statuses.
    fn name(&self) -> &'static str;
    /// Runs until shutdown is requested, the source ends, or a fatal error.
    fn run(self: Box<Self>, ctx: SourceCtx) -> SourceFuture;
}

pub fn from_config(config: &Config) -> Result<Box<dyn MarketSource>, SourceError> {
    Ok(match config.market.source {
        SourceKind::Demo => {
            let d = &config.market.demo;
            let histories = demo::history::load(&d.history, &config.market.instruments)
                .map_err(|e| SourceError::Fatal(format!("market.demo.history: {e}")))?;
            Box::new(demo::DemoSource::new(d.seed, d.candle_every.0, None).with_histories(histories))
        }
        // Name the key: the path may come from the built-in default.
        SourceKind::Csv => Box::new(csv::CsvFeed::new(config).map_err(|e| match e {
            e @ (csv::CsvError::Io { .. } | csv::CsvError::EmptyDir { .. }) => SourceError::CsvPath(e),
            e => SourceError::Csv(e),
        })?),
        SourceKind::Oanda => {
            Box::new(oanda::OandaSource::new(&config.market.oanda).map_err(|e| SourceError::Fatal(e.to_string()))?)
        }
    })
}
