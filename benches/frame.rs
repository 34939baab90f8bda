//! One full console frame (issue 6): 28 pairs (7 majors x 4 timeframes) with
//! 120 closes each, 100 signals with deliveries, two routes, health and
//! alerts, drawn into a 200x50 buffer. Target: under 0.5 ms median.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pipwatch::event::{
    CandleRecord, Circuit, Delivery, DeliveryState, Envelope, Event, FeedState, FeedStatus, HealthSample, QueueStatus,
    RouteStatus, Signal,
};
use pipwatch::time::Ts;
use pipwatch::tui::app::App;
use pipwatch::tui::theme::Theme;
use pipwatch::tui::ui;
use pipwatch::types::{Instrument, Side, Timeframe};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn app() -> App {
    let mut app = App::new("DEMO".into(), Theme::load("dark").unwrap_or_else(|e| panic!("{e}")), Ts(1_704_196_800));
    let mut seq = 0;
    let mut put = |app: &mut App, event: Event| {
        seq += 1;
        app.apply(&Envelope { seq, event });
    };
    put(&mut app, Event::Feed(FeedStatus::new("demo", FeedState::Live, None)));
    let majors = ["EUR_USD", "GBP_USD", "USD_JPY", "USD_CHF", "AUD_USD", "USD_CAD", "NZD_USD"];
    for (n, name) in majors.iter().enumerate() {
        let i = Instrument::new(name).unwrap_or_else(|e| panic!("{e}"));
        for tf in [Timeframe::M15, Timeframe::H1, Timeframe::H4, Timeframe::D] {
            // As many as the view keeps: the chart beside the tables draws them.
            for k in 0..pipwatch::view::CLOSES_KEPT as i64 {
                let close = 1.0 + 0.01 * ((k as f64 + n as f64) / 7.0).sin();
                let open = 1.0 + 0.01 * ((k as f64 - 1.0 + n as f64) / 7.0).sin();
                put(
                    &mut app,
                    Event::Candle(CandleRecord {
                        instrument: i,
                        timeframe: tf,
                        time: Ts(1_704_000_000 + k * tf.seconds()),
                        open,
                        high: open.max(close) + 0.0004,
                        low: open.min(close) - 0.0004,
                        close,
                        fast: Some(close * 1.001),
                        slow: Some(close * 0.999),
                        atr: Some(0.001),
                    }),
                );
            }
        }
    }
    for k in 0..100i64 {
        let i = Instrument::new(majors[k as usize % 7]).unwrap_or_else(|e| panic!("{e}"));
        let time = Ts(1_704_000_000 + k * 3600);
        let s = Signal {
            id: Signal::make_id(i, Timeframe::H1, time, Side::Buy),
            instrument: i,
            timeframe: Timeframe::H1,
            time,
            side: if k % 2 == 0 { Side::Buy } else { Side::Sell },
            price: 1.1,
            fast: 1.1,
            slow: 1.09,
            atr: 0.001,
            stop_loss: 1.0985,
            take_profit: 1.103,
            strategy: "sma 10/20".into(),
        };
        let id = s.id.clone();
        put(&mut app, Event::Signal(s));
        for route in ["signals", "free"] {
            put(
                &mut app,
                Event::Delivery(Delivery {
                    id: id.clone(),
                    route: route.into(),
                    state: DeliveryState::Delivered,
                    attempts: 1,
                    message_id: Some("1".into()),
                    error: None,
                    latency_secs: Some(0.2),
                }),
            );
        }
    }
    let route = |name: &str| RouteStatus {
        name: name.into(),
        circuit: Circuit::Closed,
        depth: 0,
        oldest_pending_secs: None,
        sent: 100,
        failed: 0,
        dead: 0,
        rate_limited: 0,
        waiting: false,
        last_error: None,
    };
    put(
        &mut app,
        Event::Queue(QueueStatus {
            paused: false,
            depth: Default::default(),
            routes: vec![route("signals"), route("free")],
        }),
    );
    put(&mut app, Event::Health(HealthSample { market_open: true, ..HealthSample::default() }));
    app
}

fn bench(c: &mut Criterion) {
    let app = app();
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).unwrap_or_else(|e| panic!("{e}"));
    // From 160 columns the main screen has the selected pair's candle chart.
    c.bench_function("frame/28_pairs_200x50", |b| {
        b.iter(|| {
            terminal.draw(|f| ui::draw(f, black_box(&app))).unwrap_or_else(|e| panic!("{e}"));
        })
    });
    let mut detail = app;
    detail.detail = true;
    c.bench_function("frame/detail_200x50", |b| {
        b.iter(|| {
            terminal.draw(|f| ui::draw(f, black_box(&detail))).unwrap_or_else(|e| panic!("{e}"));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
