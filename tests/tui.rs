//! The console: whole screens rendered with TestBackend at fixed sizes from a
//! fixed event stream and clock (insta snapshots), theme styles, and the real
//! binary under tmux.

mod common;

use std::time::{Duration, Instant};

use pipwatch::event::{
    Alert, AlertState, CandleRecord, Circuit, Delivery, DeliveryState, Depths, Envelope, Event, FeedState, FeedStatus,
    HealthSample, Latency, QueueStatus, RouteStatus, Signal,
};
use pipwatch::health::sampler::SystemSample;
use pipwatch::time::Ts;
use pipwatch::tui::app::{Action, App};
use pipwatch::tui::theme::Theme;
use pipwatch::tui::ui;
use pipwatch::types::{Instrument, Quote, Severity, Side, Timeframe};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

const NOW: i64 = 1_704_196_800; // 2024-01-02T12:00:00Z

fn events() -> Vec<Event> {
    let mut out = vec![Event::Feed(FeedStatus::new("demo", FeedState::Live, None))];
    for (n, (name, base)) in [("EUR_USD", 1.1), ("GBP_USD", 1.27), ("USD_JPY", 141.2)].iter().enumerate() {
        let i = Instrument::new(name).unwrap();
        for k in 0..40 {
            let close = base * (1.0 + 0.002 * ((k + n * 7) as f64 / 5.0).sin());
            let defined = k >= 20;
            out.push(Event::Candle(CandleRecord {
                instrument: i,
                timeframe: Timeframe::H1,
                time: Ts(NOW - (40 - k as i64) * 3600),
                open: close,
                high: close * 1.001,
                low: close * 0.999,
                close,
                fast: defined.then_some(close * 1.0004),
                slow: defined.then_some(close * (1.0 + 0.0003 * if n == 1 { 2.0 } else { -1.0 })),
                atr: defined.then_some(base * 0.0011),
            }));
        }
        out.push(Event::Quote(Quote { instrument: i, time: Ts(NOW), bid: base * 1.0002, ask: base * 1.0003 }));
    }
    let i = Instrument::new("EUR_USD").unwrap();
    for (k, side) in [(3, Side::Buy), (9, Side::Sell)] {
        let time = Ts(NOW - k * 3600);
        let s = Signal {
            id: Signal::make_id(i, Timeframe::H1, time, side),
            instrument: i,
            timeframe: Timeframe::H1,
            time,
            side,
            price: 1.10123,
            fast: 1.1013,
            slow: 1.1011,
            atr: 0.0012,
            stop_loss: 1.09943,
            take_profit: 1.10483,
            strategy: "sma 10/20".into(),
        };
        out.push(Event::Signal(s.clone()));
        for (route, state) in [("signals", DeliveryState::Delivered), ("free", DeliveryState::Queued)] {
            out.push(Event::Delivery(Delivery {
                id: s.id.clone(),
                route: route.into(),
                state,
                attempts: 1,
                message_id: None,
                error: None,
                latency_secs: None,
            }));
        }
    }
    let route = |name: &str, circuit, depth| RouteStatus {
        name: name.into(),
        circuit,
        depth,
        oldest_pending_secs: (depth > 0).then_some(42),
        sent: 12,
        failed: 1,
        dead: 0,
        rate_limited: 0,
        waiting: false,
        last_error: None,
    };
    out.push(Event::Queue(QueueStatus {
        paused: false,
        depth: Depths { urgent: 0, high: 2, normal: 0, low: 1 },
        routes: vec![route("signals", Circuit::Closed, 0), route("free", Circuit::Open, 3)],
    }));
    out.push(Event::Health(HealthSample {
        time: Ts(NOW),
        system: SystemSample {
            cpu: 12.5,
            cpus: vec![10.0, 15.0],
            memory_used: 4 << 30,
            memory_total: 16 << 30,
            swap_used: 0,
            swap_total: 0,
            disk_used: 90 << 30,
            disk_total: 100 << 30,
            net_rx_per_s: 2048,
            net_tx_per_s: 512,
            process_cpu: 1.0,
            process_rss: 40 << 20,
            uptime_secs: 3600,
            load: [0.1, 0.2, 0.3],
            ..SystemSample::default()
        },
        latency: Latency { p50: 0.8, p95: 1.9, p99: 3.2, count: 10 },
        ws_clients: 2,
        market_open: true,
        stale: Vec::new(),
        engine_stalled_secs: None,
        demo_clock: None,
    }));
    out.push(Event::Alert(Alert {
        id: "disk:1".into(),
        check: "disk".into(),
        severity: Severity::Warning,
        state: AlertState::Raised,
        title: "the data directory's disk".into(),
        message: "90%".into(),
        time: Ts(NOW),
    }));
    out
}

fn app(theme: &str) -> App {
    let mut app = App::new("DEMO".into(), Theme::load(theme).unwrap(), Ts(NOW));
    for (n, e) in events().into_iter().enumerate() {
        app.apply(&Envelope { seq: n as u64 + 1, event: e });
    }
    app.server = Some("127.0.0.1:8787".into());
    app
}

fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::draw(f, app)).unwrap();
    t
}

#[test]
fn the_whole_screen_at_80x24_and_160x48() {
    let a = app("dark");
    insta::assert_snapshot!("screen_80x24", render(&a, 80, 24).backend());
    insta::assert_snapshot!("screen_160x48", render(&a, 160, 48).backend());
    // The smallest size drawn: the signals' time keeps its digits.
    insta::assert_snapshot!("screen_60x16", render(&a, 60, 16).backend());
    // Narrow and tall: each route's depth, then its state and counts.
    let text = format!("{}", render(&a, 60, 40).backend());
    assert!(text.contains("3 queued: u0 h2 n0 l1") && text.contains("free     3 queued"), "{text}");
    assert!(text.contains("  failing ✓12 ✗1 dead 0"), "{text}");
}

/// A signal's date shows: in full where the panel has room, else the hour
/// for the newest signal's day and the date for older days.
#[test]
fn signals_from_older_days_show_their_date() {
    let mut a = app("dark");
    let i = Instrument::new("GBP_USD").unwrap();
    let time = Ts(NOW - 30 * 3600); // 2024-01-01 06:00
    a.apply(&Envelope {
        seq: 1000,
        event: Event::Signal(Signal {
            id: Signal::make_id(i, Timeframe::H4, time, Side::Buy),
            instrument: i,
            timeframe: Timeframe::H4,
            time,
            side: Side::Buy,
            price: 1.27,
            fast: 1.27,
            slow: 1.26,
            atr: 0.002,
            stop_loss: 1.267,
            take_profit: 1.276,
            strategy: "sma 10/20".into(),
        }),
    });
    let text = |w, h| format!("{}", render(&a, w, h).backend());
    let narrow = text(80, 24);
    assert!(narrow.contains("│01-01 BUY  GBP_USD H4"), "{narrow}");
    assert!(narrow.contains("│09:00 BUY  EUR_USD H1") && narrow.contains("│03:00 SELL EUR_USD H1"), "{narrow}");
    let wide = text(160, 48);
    assert!(wide.contains("│01-01 06:00 BUY  GBP_USD H4"), "{wide}");
    assert!(wide.contains("│01-02 09:00 BUY  EUR_USD H1"), "{wide}");
}

/// Paused notifications are the header's most important news: down to the
/// smallest size, and in the worst case of every other segment at its
/// longest, they stay on screen.
#[test]
fn paused_notifications_show_in_the_header_at_every_width() {
    let mut a = app("dark");
    let n = 1000;
    a.apply(&Envelope {
        seq: n,
        event: Event::Queue(QueueStatus { paused: true, depth: Depths::default(), routes: Vec::new() }),
    });
    a.apply(&Envelope { seq: n + 1, event: Event::Feed(FeedStatus::new("demo", FeedState::WarmingUp, None)) });
    for width in [60, 79, 80, 99, 100, 160] {
        let t = render(&a, width, 24);
        let buf = t.backend().buffer();
        let header: String = (0..width).map(|x| buf[(x, 0)].symbol().to_string()).collect();
        assert!(header.trim_end().ends_with("notify PAUSED"), "{width} columns: {header:?}");
    }
}

/// Attached to a remote instance whose link dropped: the broken link and the
/// last status known stay in the header at every width, marked as the past;
/// the footer says since when and why.
#[test]
fn an_attached_console_keeps_the_link_state_and_status_in_the_header() {
    use pipwatch::tui::app::LinkState;
    let mut a = app("dark");
    a.mode = "ATTACHED 10.0.0.5:8787".into();
    a.set_link(LinkState::Connected, None);
    let line = |a: &App, width: u16, y: u16| {
        let t = render(a, width, 24);
        let buf = t.backend().buffer();
        (0..width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>()
    };
    let h = line(&a, 100, 0);
    assert!(h.starts_with(" ATTACHED 10.0.0.5:8787 (connected) │"), "the title gives way first: {h:?}");
    assert!(h.contains("feed ") && h.contains("DEGRADED") && h.contains("notify on"), "{h:?}");
    let h = line(&a, 160, 0);
    assert!(h.starts_with(" pipwatch  │ ATTACHED 10.0.0.5:8787 (connected) │"), "{h:?}");
    assert!(!line(&a, 160, 23).contains("link down"));

    // Dropped at NOW; the console's clock then runs on while it retries.
    a.set_link(LinkState::Reconnecting, Some("Connection refused (os error 111)".into()));
    a.now = Ts(NOW + 95);
    a.set_link(LinkState::Reconnecting, Some("Connection reset by peer (os error 104)".into()));
    let since = "link down since 12:00:00Z"; // NOW
    for width in [60, 80, 100, 160] {
        let h = line(&a, width, 0);
        assert!(h.contains("(reconnecting)") && h.contains("was DEGRADED"), "{width}: {h:?}");
        // What cannot be known of an instance out of reach is not shown.
        assert!(!h.contains("feed") && !h.contains("open"), "{width}: {h:?}");
        assert!(width < 80 || h.contains("notify on"), "{width}: {h:?}");
        let footer = line(&a, width, 23);
        assert!(footer.starts_with(&format!(" {since}")), "{width}: {footer:?}");
    }
    let footer = line(&a, 160, 23);
    assert!(footer.contains(&format!("{since}: Connection reset by peer (os error 104)  │ ? help")), "{footer:?}");

    // Back: the status is the instance's own again, and the footer forgets the drop.
    a.set_link(LinkState::Connected, None);
    let h = line(&a, 100, 0);
    assert!(h.contains("(connected)") && h.contains("│ DEGRADED") && !h.contains("was"), "{h:?}");
    assert!(line(&a, 100, 23).starts_with(" ? help"));
    assert_eq!(a.link.as_ref().map(|l| l.since), Some(Ts(NOW + 95)));
}

#[test]
fn help_and_too_small() {
    let mut a = app("dark");
    assert_eq!(a.key(crossterm::event::KeyCode::Char('?'), false), Action::Redraw);
    insta::assert_snapshot!("help_80x24", render(&a, 80, 24).backend());
    // At the smallest size every line of the help still fits.
    insta::assert_snapshot!("help_60x16", render(&a, 60, 16).backend());
    insta::assert_snapshot!("too_small", render(&a, 50, 10).backend());
    // Narrower than the message: it wraps, so the sizes still show.
    insta::assert_snapshot!("too_small_30x8", render(&a, 30, 8).backend());
    assert_eq!(a.key(crossterm::event::KeyCode::Esc, false), Action::Redraw);
    assert!(!a.help);
}

#[test]
fn mono_has_no_colour_and_dark_colours_the_sides() {
    let mono = render(&app("mono"), 160, 48);
    for cell in mono.backend().buffer().content() {
        assert!(matches!(cell.fg, Color::Reset) && matches!(cell.bg, Color::Reset), "{cell:?}");
    }
    let dark = render(&app("dark"), 160, 48);
    let buf = dark.backend().buffer();
    let area = buf.area;
    let buy = (0..area.height)
        .flat_map(|y| (0..area.width).map(move |x| (x, y)))
        .find(|&(x, y)| {
            buf[(x, y)].symbol() == "B" && buf[(x + 1, y)].symbol() == "U" && buf[(x + 2, y)].symbol() == "Y"
        })
        .expect("no BUY on screen");
    assert_eq!(buf[buy].fg, Color::Green);
}

#[test]
fn keys_move_focus_select_pause_and_cycle_themes() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    assert_eq!(a.key(K::Char('j'), false), Action::Redraw);
    assert_eq!(a.selected, 1);
    a.key(K::Down, false);
    a.key(K::Down, false);
    assert_eq!(a.selected, 2, "selection stops at the last pair");
    a.key(K::Tab, false);
    a.key(K::Char('j'), false);
    assert_eq!((a.selected, a.signal_selected), (2, 1));
    assert_eq!(a.key(K::Char('p'), false), Action::Pause(true));
    assert_eq!(a.key(K::Char('t'), false), Action::Redraw);
    assert_eq!(a.theme.name, "light");
    assert_eq!(a.key(K::Char('c'), true), Action::Quit);
    assert_eq!(a.key(K::Char('q'), false), Action::Quit);
}

/// An instance with no notification routes has nothing to pause: the
/// header says so, and `p` tells why it does nothing.
#[test]
fn without_routes_the_header_says_none_and_pause_explains() {
    let mut a = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW));
    let header = |a: &App| {
        let t = render(a, 100, 24);
        let buf = t.backend().buffer();
        (0..100).map(|x| buf[(x, 0)].symbol().to_string()).collect::<String>()
    };
    assert!(header(&a).trim_end().ends_with("notify none"), "{:?}", header(&a));
    assert_eq!(a.key(crossterm::event::KeyCode::Char('p'), false), Action::Redraw);
    assert_eq!(a.notice.as_deref(), Some(pipwatch::tui::app::NO_ROUTES));
    let t = render(&a, 100, 24);
    let buf = t.backend().buffer();
    let footer: String = (0..100).map(|x| buf[(x, 23)].symbol().to_string()).collect();
    assert!(footer.starts_with(" nothing to pause: no notification routes"), "{footer:?}");
    // With a queue, `p` pauses.
    a.apply(&Envelope { seq: 1, event: Event::Queue(QueueStatus::default()) });
    assert_eq!(a.key(crossterm::event::KeyCode::Char('p'), false), Action::Pause(true));
    assert!(header(&a).trim_end().ends_with("notify on"), "{:?}", header(&a));
}

/// Without routes nothing is ever sent: the "Sent" column's room goes to
/// the stop and target, which show at 100 columns only then.
#[test]
fn without_routes_the_signals_show_stop_and_target_instead_of_sent() {
    let mut a = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW));
    for (n, e) in events().into_iter().enumerate() {
        if !matches!(e, Event::Queue(_) | Event::Delivery(_)) {
            a.apply(&Envelope { seq: n as u64 + 1, event: e });
        }
    }
    let signals_header = |a: &App| {
        let text = format!("{}", render(a, 100, 30).backend());
        text.lines().find(|l| l.contains("│Time")).unwrap_or_default().to_string()
    };
    let header = signals_header(&a);
    assert!(header.contains("Stop") && header.contains("Target") && !header.contains("Sent"), "{header}");
    a.apply(&Envelope { seq: 1000, event: Event::Queue(QueueStatus::default()) });
    let header = signals_header(&a);
    assert!(header.contains("Sent") && !header.contains("Stop"), "{header}");
}

/// The pair table's header row at `w` columns.
fn pair_header(a: &App, w: u16) -> String {
    let text = format!("{}", render(a, w, 30).backend());
    text.lines().find(|l| l.contains("│Pair")).unwrap_or_default().to_string()
}

/// The pairs' sparkline of closes takes the room the other columns leave,
/// one cell short of the border, from the first width that shows every
/// column; it is the first to go.
#[test]
fn the_sparkline_of_closes_fills_the_room_the_columns_leave() {
    let a = app("dark");
    const SPARK: &str = "▁▂▃▄▅▆▇█";
    // (cells from the sparkline's first to the panel's right border, sparkline length)
    let spark = |w: u16| {
        let text = format!("{}", render(&a, w, 30).backend());
        let row: Vec<char> = text.lines().find(|l| l.contains("EUR_USD  H1")).unwrap_or_default().chars().collect();
        let start = row.iter().position(|c| SPARK.contains(*c));
        let len = row.iter().filter(|c| SPARK.contains(**c)).count();
        let border = row.iter().rposition(|c| *c == '│');
        (start.zip(border).map(|(s, b)| b - s), len)
    };
    for w in [100, 104, 107, 110, 120] {
        let (room, len) = spark(w);
        // 40 closes, more than each of these widths has room for.
        assert!(len >= 10 && room == Some(len + 1), "width {w}: {len} closes in a room of {room:?}");
    }
    assert!(spark(104).1 > spark(100).1 && spark(107).1 > spark(104).1);
    // From 108 columns the track record takes its 13 cells, leaving the
    // sparkline its least; wider, the sparkline grows again.
    let header = |w: u16| pair_header(&a, w);
    assert!(!header(107).contains("Record") && header(108).contains("Record"), "{}", header(108));
    assert_eq!(spark(108).1, 10);
    assert!(spark(120).1 > spark(110).1);
    // Room for more than there are: every close, no more.
    assert_eq!(spark(150).1, 40);
    // Narrower, the sparkline goes below its 10 cells, before any other column.
    assert_eq!(spark(95).1, 10);
    assert_eq!(spark(94).1, 0);
    assert!(header(94).contains("Last signal"), "{}", header(94));
}

/// Each column of the pair table is shown where it fits: a column is not
/// dropped while the panel has room for it, and they go last first.
#[test]
fn the_pair_columns_are_shown_where_they_fit() {
    let a = app("dark");
    let header = |w: u16| pair_header(&a, w);
    let shown = |w: u16| ["Slow", "ATR", "Last signal"].map(|c| header(w).contains(c));
    // The width each column needs, from its header's end and the cells after it.
    for (w, expected) in [
        (84, [true, true, true]),
        (83, [true, true, false]),
        (80, [true, true, false]),
        (71, [true, true, false]),
        (70, [true, false, false]),
        (64, [true, false, false]),
        (63, [false, false, false]),
    ] {
        assert_eq!(shown(w), expected, "width {w}: {}", header(w));
    }
    // Where a column shows, its header's row has no room to spare for the next.
    let row = header(83);
    let spare = row.trim_end_matches('│').len() - row.trim_end_matches('│').trim_end().len();
    assert!(spare < 13, "{spare} cells spare at 83: {row}");
}

/// A CSV history is not live: the header leaves out whether today's market
/// is open.
#[test]
fn a_csv_history_has_no_market_hours_in_the_header() {
    let mut a = app("dark");
    let header = |a: &App| format!("{}", render(a, 120, 30).backend()).lines().next().unwrap_or_default().to_string();
    assert!(header(&a).contains("market open"), "{}", header(&a));
    let csv = FeedStatus::new("csv", FeedState::Finished, None);
    a.apply(&Envelope { seq: 1000, event: Event::Feed(csv) });
    assert!(!header(&a).contains("market"), "{}", header(&a));
    assert!(header(&a).contains("feed finished"), "{}", header(&a));
}

/// A health sample with no signal in its latency window says so: 0.0 ms
/// would read as a latency.
#[test]
fn a_sample_without_signals_shows_no_latency() {
    let mut a = app("dark");
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("latency p50 0.8 p95 1.9 p99 3.2 ms (10)"), "{text}");
    let Some(Event::Health(mut h)) = events().into_iter().find(|e| matches!(e, Event::Health(_))) else {
        panic!("no health event to start from")
    };
    h.latency = Latency { p50: 0.0, p95: 0.0, p99: 0.0, count: 0 };
    a.apply(&Envelope { seq: 1000, event: Event::Health(h) });
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("latency — no signal in this 10 min window") && !text.contains("p50 0.0"), "{text}");
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux").args(args).output().expect("tmux is installed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tmux session that ends with the test, also when the test fails, so
/// that no console is left running behind it.
struct Session(String);

impl Session {
    fn new(name: &str) -> Session {
        Session(format!("{name}-{}", std::process::id()))
    }
}

impl std::ops::Deref for Session {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

/// The pane of `session` once every one of `what` is on it and `absent`
/// (unless empty) is not; fails the test after 20 s.
fn wait_for_pane(session: &str, what: &[&str], absent: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if what.iter().all(|w| pane.contains(w)) && !absent.iter().any(|a| pane.contains(a)) {
            return pane;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("{what:?} never appeared (without {absent:?}):\n{pane}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Without a terminal (cron, a pipe, `ssh host pipwatch` without -t), the
/// console says so and what to run instead, before it starts anything: no
/// data directory is made, nothing is connected to. Run in a session of its
/// own, so that it has no controlling terminal either.
#[test]
fn without_a_terminal_the_console_says_what_to_run_instead() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Something listening where attach would go: it must not be called.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    for (args, what) in [(vec!["--data-dir"], "`pipwatch`"), (vec!["attach", &url], "`pipwatch attach`")] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipwatch"));
        cmd.args(&args).env_clear().env("PATH", std::env::var("PATH").unwrap()).env("TERM", "xterm");
        if args[0] == "--data-dir" {
            cmd.arg(&data);
        }
        // SAFETY: setsid is async-signal-safe; it only detaches the child
        // from this terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let out = assert_cmd::Command::from_std(cmd).timeout(Duration::from_secs(30)).write_stdin("").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with("error: the console needs a terminal, and this has none")
                && stderr.contains(&format!("so {what} did not start")),
            "{stderr}"
        );
        for instead in ["pipwatch headless", "pipwatch attach", "ssh -t host pipwatch"] {
            assert!(stderr.contains(instead), "{instead}: {stderr}");
        }
        assert!(!stderr.contains("No such device"), "{stderr}");
    }
    assert!(!data.exists(), "the console started an instance before finding it had no terminal");
    assert!(listener.accept().is_err(), "attach connected before finding it had no terminal");
}

/// The shell command a tmux pane runs: the real console with `args`, in a
/// clean environment (nothing inherited, its server on any free port), then
/// `then`, and the pane kept open a while to be read.
fn console_cmd(args: &str, then: &str) -> String {
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color PIPWATCH_SERVER__LISTEN='\"127.0.0.1:0\"' {} {args}; {then}; sleep 30",
        bin.display()
    )
}

#[test]
fn the_real_binary_under_tmux_shows_help_quits_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::new("pipwatch-test");
    let exit_file = dir.path().join("exit");
    let cmd = console_cmd(
        &format!("--data-dir {}", dir.path().join("data").display()),
        &format!("echo $? > {}", exit_file.display()),
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &cmd]);
    let wait_for = |what: &str| wait_for_pane(&session, &[what], &[]);
    let screen = wait_for("Pairs (7");
    // The time-lapse says how fast it runs (the default: an H4 candle a second).
    assert!(screen.contains("DEMO ×14,400"), "{screen}");
    tmux(&["send-keys", "-t", &session, "?"]);
    wait_for("this help");
    tmux(&["send-keys", "-t", &session, "q"]);
    let start = Instant::now();
    while !exit_file.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap_or_default().trim(), "0");
    // The alternate screen is gone: none of the console is left on the pane.
    // Waited for: tmux reads what the console wrote last after it has exited.
    wait_for_pane(&session, &[], &["Pairs (7", "this help"]);
}

/// The console's log is a file per day, and old days are deleted: a data
/// directory holding ten days of logs keeps the newest seven after a start.
#[test]
fn the_console_log_rotates_daily_and_keeps_seven_days() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for day in 1..=10 {
        let old = data.join(format!("pipwatch.log.2026-01-{day:02}"));
        std::fs::write(&old, format!("day {day}\n")).unwrap();
        // Oldest first, by the time the files were made.
        std::thread::sleep(Duration::from_millis(20));
    }
    let session = Session::new("pipwatch-logs");
    let exit_file = dir.path().join("exit");
    let cmd = console_cmd(&format!("--data-dir {}", data.display()), &format!("echo $? > {}", exit_file.display()));
    tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &cmd]);
    wait_for_pane(&session, &["Pairs (7"], &[]);
    tmux(&["send-keys", "-t", &session, "q"]);
    let start = Instant::now();
    while !exit_file.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut logs: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pipwatch.log"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), pipwatch::logging::KEPT_LOG_FILES, "{logs:?}");
    let today = &Ts::now().to_string()[..10];
    let current = data.join(format!("pipwatch.log.{today}"));
    assert!(logs.contains(&format!("pipwatch.log.{today}")), "{logs:?}");
    assert!(!logs.contains(&"pipwatch.log.2026-01-01".to_string()), "{logs:?}");
    let log = std::fs::read_to_string(&current).unwrap();
    assert!(log.contains("engine stopped"), "today's file has today's log");
    // A first start says where its data is, in the log as on stderr.
    assert!(log.contains(&format!("first run of pipwatch. data directory: {}", data.display())), "{log}");
}

/// An admin's console attached to a server that restarts: the drop shows
/// with its time and reason and the status as it was; a pause is refused,
/// not queued to land later; once the server is back the console is live
/// again and its commands go through.
#[test]
fn attach_shows_a_dropped_link_and_comes_back_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    // A route, so there is a queue to pause; nothing listens on port 9.
    let config = common::config_file(
        dir.path(),
        "pipwatch.toml",
        "[[notify.routes]]\nname = \"signals\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/1/x\"\n",
    );
    // Killed when dropped: a failing wait below must not leave it running.
    let serve = || {
        let child = common::pipwatch_std()
            .env("PIPWATCH_SERVER__LISTEN", format!("\"127.0.0.1:{port}\""))
            .args(["headless", "-c"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let child = common::Running(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "the server never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let stop = |mut child: common::Running| {
        let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        assert!(child.wait().unwrap().success());
    };
    let server = serve();
    let session = Session::new("pipwatch-attach");
    let cmd = format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color {} attach ws://127.0.0.1:{port}/ws; sleep 30",
        bin.display()
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &cmd]);
    // Absences are waited for too: a capture can land mid-frame, before the
    // lines that replace them are written.
    wait_for_pane(&session, &["(connected)", "Pairs (7", "notify on"], &["link down"]);

    stop(server);
    // An instance out of reach has no known feed: "feed live" must go.
    wait_for_pane(&session, &["(reconnecting)", "link down since", "│ was "], &["feed live"]);
    tmux(&["send-keys", "-t", &session, "p"]);
    wait_for_pane(&session, &["not connected: nothing was sent"], &[]);

    let server = serve();
    wait_for_pane(&session, &["(connected)", "notify on"], &["link down", "not connected", "│ was "]);
    // The pause refused during the drop was not sent when the link came back;
    // one given now is.
    tmux(&["send-keys", "-t", &session, "p"]);
    wait_for_pane(&session, &["notify PAUSED"], &[]);
    stop(server);
}

/// An alert still open from the last run is on the console's first screens,
/// not only once it would have been raised again: here that would take ten
/// minutes.
#[test]
fn the_console_shows_an_alert_kept_from_the_last_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = |sustain: &str| {
        let path = dir.path().join(format!("alert-{sustain}.toml"));
        // Any disk in use is past 1%.
        let text = format!("[health]\nsample_every = \"200ms\"\nsustain = \"{sustain}\"\ndisk_warning = 1.0\n");
        std::fs::write(&path, text).unwrap();
        path
    };
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    let out = std::process::Command::new(&bin)
        .env("PIPWATCH_SERVER__LISTEN", "\"127.0.0.1:0\"")
        .args(["headless", "--no-server", "--for", "6s", "-c"])
        .arg(config("1s"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("\"check\":\"disk\""), "no disk alert in the first run: {stdout}");

    let session = Session::new("pipwatch-alert");
    let cmd = console_cmd(&format!("-c {} --data-dir {}", config("10m").display(), data.display()), "true");
    tmux(&["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", &cmd]);
    wait_for_pane(&session, &["Pairs (7", "warning the data directory's disk"], &[]);
    tmux(&["send-keys", "-t", &session, "q"]);
}

/// The pid of the process whose command line holds `needle`.
#[cfg(target_os = "linux")]
fn pid_with(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(needle) && !cmdline.starts_with("bash")).then_some(pid)
    })
}

/// `kill -TSTP` from outside, as a job-control shell or an admin sends it:
/// the console gives the terminal back before stopping, and on `fg` draws
/// its whole screen again (not only what changed meanwhile).
#[cfg(target_os = "linux")]
#[test]
fn sigtstp_from_outside_gives_the_terminal_back_and_fg_redraws() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::new("pipwatch-tstp");
    let data = dir.path().join("data");
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        "env -i PATH=\"$PATH\" TERM=xterm-256color bash --norc --noprofile -i",
    ]);
    let run = format!("PIPWATCH_SERVER__LISTEN='\"127.0.0.1:0\"' {} --data-dir {}", bin.display(), data.display());
    tmux(&["send-keys", "-t", &session, &run, "Enter"]);
    let wait_for = |what: &[&str], absent: &[&str]| wait_for_pane(&session, what, absent);
    wait_for(&["Pairs (7"], &[]);
    let pid = pid_with(&data.display().to_string()).expect("the console's pid");
    let sent = std::process::Command::new("kill").args(["-TSTP", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    // The shell's own screen, with the job stopped: the console left the
    // alternate screen first.
    wait_for(&["Stopped"], &["Pairs (7"]);
    tmux(&["send-keys", "-t", &session, "fg", "Enter"]);
    // The whole screen, titles of every panel, not only the cells that
    // changed while it was stopped.
    wait_for(&["Pairs (7", "Signals", "Health"], &["Stopped"]);
    tmux(&["send-keys", "-t", &session, "q"]);
    let start = Instant::now();
    while pid_with(&data.display().to_string()).is_some() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // `$?` of the job `fg` resumed: how the console exited.
    tmux(&["send-keys", "-t", &session, "echo EXIT=$?", "Enter"]);
    let pane = wait_for(&["EXIT="], &[]);
    assert!(pane.contains("EXIT=0") && !pane.contains("Pairs (7"), "{pane}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_folds_the_same_view_as_the_in_process_console() {
    use pipwatch::tui::remote::{self, Incoming};
    use std::sync::Arc;
    let hub = Arc::new(pipwatch::hub::Hub::new(1 << 16));
    let stop = tokio_util::sync::CancellationToken::new();
    let opts = pipwatch::server::Options {
        listen: "127.0.0.1:0".into(),
        token: None,
        max_clients: 8,
        history: 4096,
        client_buffer: 4096,
        max_frame: 65536,
        ping_every: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        source: "demo".into(),
    };
    let server = pipwatch::server::start(
        opts,
        hub.clone(),
        pipwatch::control::Control::new(hub.clone(), None),
        Arc::new(pipwatch::metrics::Metrics::new()),
        stop.clone(),
    )
    .await
    .unwrap();
    let mut local = hub.subscribe();
    let recorded = events();
    // Half before the console attaches (it gets them in the snapshot), half after.
    let (before, after) = recorded.split_at(recorded.len() / 2);
    for e in before {
        hub.publish(e.clone());
    }
    let url = format!("ws://{}/ws", server.addr);
    let first = remote::connect(&url, None).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let (_cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(remote::follow(first, url, None, tx, cmd_rx, stop.clone()));
    let mut remote_app = App::new("ATTACHED".into(), Theme::load("dark").unwrap(), Ts(NOW));
    // The snapshot first.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
            Incoming::Snapshot(v) => {
                remote_app.view = *v;
                break;
            }
            _ => continue,
        }
    }
    for e in after {
        hub.publish(e.clone());
    }
    let last = recorded.len() as u64;
    while remote_app.view.seq < last {
        if let Incoming::Event(env) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
            remote_app.apply(&env);
        }
    }
    let mut local_app = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW));
    while local_app.view.seq < last {
        local_app.apply(&local.recv().await.unwrap().into_event().unwrap());
    }
    assert_eq!(remote_app.view, local_app.view);
    // And so the same screen.
    remote_app.mode = local_app.mode.clone();
    assert_eq!(render(&remote_app, 120, 40).backend().buffer(), render(&local_app, 120, 40).backend().buffer());
    stop.cancel();
}

#[test]
fn the_detail_view_of_a_pair() {
    let mut a = app("dark");
    assert_eq!(a.key(crossterm::event::KeyCode::Enter, false), Action::Redraw);
    assert!(a.detail);
    let t = render(&a, 100, 30);
    let text = format!("{}", t.backend());
    assert!(text.contains("EUR_USD H1 — 40 of 40 candles") && text.contains("target"), "{text}");
    insta::assert_snapshot!("detail_100x30", t.backend());
    // At the smallest size the values still fit their panel.
    insta::assert_snapshot!("detail_60x16", render(&a, 60, 16).backend());
    a.key(crossterm::event::KeyCode::Esc, false);
    assert!(!a.detail);
}

#[test]
fn the_feed_filter_cycles_pair_buys_sells_all() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    let title = |a: &App| {
        let text = format!("{}", render(a, 120, 40).backend());
        text.lines().find(|l| l.contains("Signals (")).unwrap_or_default().to_string()
    };
    assert!(title(&a).contains("Signals (2)"));
    a.key(K::Char('j'), false); // GBP_USD: it has no signal
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (0 of 2) · GBP_USD"), "{}", title(&a));
    assert!(format!("{}", render(&a, 120, 40).backend()).contains("no signal matches the filter"));
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (1 of 2) · buy only"), "{}", title(&a));
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (1 of 2) · sell only"), "{}", title(&a));
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (2)"));
}

#[test]
fn the_log_panel_toggles() {
    let mut a = app("dark");
    assert!(!format!("{}", render(&a, 120, 40).backend()).contains("Logs (l closes)"));
    a.key(crossterm::event::KeyCode::Char('l'), false);
    let text = format!("{}", render(&a, 120, 40).backend());
    assert!(text.contains("Logs (l closes)") && text.contains("Pairs (3"), "{text}");
    // Too short a terminal for the panel: the footer says why nothing opened.
    let text = format!("{}", render(&a, 100, 18).backend());
    assert!(!text.contains("Logs (l closes)") && text.contains("logs need 19+ rows: see pipwatch.log"), "{text}");
    let text = format!("{}", render(&a, 100, 19).backend());
    assert!(text.contains("Logs (l closes)") && !text.contains("logs need"), "{text}");
}

#[test]
fn keys_come_from_the_config_and_the_help_shows_them() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    let keys = pipwatch::config::Keys { quit: "x".into(), help: "h".into(), ..Default::default() };
    a.keys = pipwatch::tui::app::KeyMap::from_config(&keys);
    assert_eq!(a.key(K::Char('q'), false), Action::None, "q is no longer quit");
    assert_eq!(a.key(K::Char('x'), false), Action::Quit);
    a.key(K::Char('h'), false);
    let text = format!("{}", render(&a, 100, 30).backend());
    assert!(text.contains(" x               quit") && text.contains(" h               this help"), "{text}");
}

#[test]
fn mono_and_dark_styles_snapshot() {
    // Buffer's Debug lists the style runs, so these pin colours and emphasis.
    insta::assert_snapshot!("styles_dark_80x24", format!("{:?}", render(&app("dark"), 80, 24).backend().buffer()));
    insta::assert_snapshot!("styles_mono_80x24", format!("{:?}", render(&app("mono"), 80, 24).backend().buffer()));
}

#[test]
fn health_history_draws_sparklines() {
    let mut a = app("dark");
    for (n, cpu) in [10.0f32, 50.0, 90.0, 30.0].into_iter().enumerate() {
        let h = HealthSample {
            time: Ts(NOW + n as i64),
            system: SystemSample { cpu, memory_total: 1, ..SystemSample::default() },
            market_open: true,
            ..HealthSample::default()
        };
        a.apply(&Envelope { seq: 1000 + n as u64, event: Event::Health(h) });
    }
    let text = format!("{}", render(&a, 120, 40).backend());
    let line = text.lines().find(|l| l.contains("cpu  ")).expect("no cpu sparkline");
    // 10, 50, 90, 30 of 100 (plus the fixture's 12.5 first).
    assert!(line.contains("▂▂▅▇▃"), "{line}");
}

/// The console on a data directory whose history is all applied: nothing
/// new comes, and the pairs and signals of the last run are on the screen
/// (they were blank until the next candle, hours away on H4).
#[test]
fn the_console_starts_where_the_last_run_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let source = format!("csv:{}", common::data_file().display());
    let mut cmd = common::pipwatch_std();
    cmd.args(["--source", &source, "--data-dir"]).arg(&data).arg("headless");
    let records = common::records_until(cmd, common::feed_finished);
    let last = common::of_type(&records, "signal").last().map(|s| (*s).clone()).expect("the history has signals");
    let (time, price) = (last["time"].as_str().unwrap(), last["price"].as_f64().unwrap());
    // As the feed shows it: "12-29 08:00" and the entry price.
    let row = (format!("{} {}", &time[5..10], &time[11..16]), format!("{price:.5}"));

    let session = Session::new("pipwatch-restart");
    let cmd = console_cmd(&format!("--source {source} --data-dir {}", data.display()), "true");
    tmux(&["new-session", "-d", "-s", &session, "-x", "120", "-y", "30", &cmd]);
    let pane = wait_for_pane(&session, &["feed finished", "Signals (100)", &row.0, &row.1], &[]);
    let pair = pane.lines().find(|l| l.contains("EUR_USD  H1")).unwrap_or_default();
    assert!(!pair.contains("—       —"), "the pair has its last candle's values: {pair}");
    // Its detail view: the recent closes kept at the clean stop, and its last signal.
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for_pane(&session, &["EUR_USD H1 — ", "of 240 candles ", &row.1, "Esc: back"], &[]);
}

/// The in-process console's feed, stalled while the engine publishes far
/// more than the hub keeps for it: once it reads again it is handed the
/// hub's view and what follows, and ends equal to the hub, not with a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_console_that_falls_behind_ends_with_the_hubs_view() {
    use pipwatch::tui::remote::Incoming;
    let hub = std::sync::Arc::new(pipwatch::hub::Hub::new(8));
    let (start, subscription) = hub.subscribe_with_view();
    let (mut rx, forward) = pipwatch::console::forward(subscription, 2);
    let mut console = app("dark");
    console.view = start;
    // The console reads nothing meanwhile: its channel (2) and the hub's (8) overflow.
    for e in events().iter().cycle().take(500) {
        hub.publish(e.clone());
    }
    let mut snapshots = 0;
    while console.view.seq < hub.last() {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
            Incoming::Event(env) => console.apply(&env),
            Incoming::Snapshot(v) => {
                snapshots += 1;
                console.view = *v;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    forward.abort();
    assert!(snapshots > 0, "the console must have fallen behind for this test to mean anything");
    assert_eq!(console.view, hub.snapshot());
    assert_eq!(console.view.seq, 500);
}

/// `attach` whose console stops reading (a slow SSH link, a suspended
/// process) while the instance publishes far more than the server buffers
/// for it: once it reads again it is handed `lagged` and a fresh snapshot,
/// and ends with the hub's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_that_falls_behind_ends_with_the_hubs_view() {
    use pipwatch::tui::remote::{self, Incoming};
    use std::sync::Arc;
    let hub = Arc::new(pipwatch::hub::Hub::new(1 << 16));
    let stop = tokio_util::sync::CancellationToken::new();
    let opts = pipwatch::server::Options {
        listen: "127.0.0.1:0".into(),
        token: None,
        max_clients: 8,
        history: 64,
        client_buffer: 16,
        max_frame: 65536,
        ping_every: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        source: "demo".into(),
    };
    let control = pipwatch::control::Control::new(hub.clone(), None);
    let metrics = Arc::new(pipwatch::metrics::Metrics::new());
    let server = pipwatch::server::start(opts, hub.clone(), control, metrics, stop.clone()).await.unwrap();
    let url = format!("ws://{}/ws", server.addr);
    let first = remote::connect(&url, None).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let (_cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(remote::follow(first, url, None, tx, cmd_rx, stop.clone()));
    // The console reads nothing while 3,000 events of 2 kB go out.
    let recorded = events();
    let big = "x".repeat(2000);
    for n in 0..3000 {
        let e = match n % 10 {
            0 => recorded[(n / 10) % recorded.len()].clone(),
            _ => Event::Feed(FeedStatus::new("demo", FeedState::Live, Some(big.clone()))),
        };
        hub.publish(e);
        if n % 30 == 29 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut console = app("dark");
    let mut snapshots = 0;
    while console.view.seq < hub.last() {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
            Incoming::Event(env) => {
                assert_eq!(env.seq, console.view.seq + 1, "events follow the view without a gap");
                console.apply(&env);
            }
            Incoming::Snapshot(v) => {
                snapshots += 1;
                console.view = *v;
            }
            Incoming::Link(..) | Incoming::Notice(_) => {}
        }
    }
    stop.cancel();
    // One snapshot on connecting; more only if it fell behind.
    assert!(snapshots > 1, "attach must have fallen behind for this test to mean anything");
    assert_eq!(console.view, hub.snapshot());
}

fn footer(a: &App, w: u16, h: u16) -> String {
    let text = format!("{}", render(a, w, h).backend());
    text.lines().last().unwrap_or_default().to_string()
}

/// A footer note gives the footer back: after a few seconds, or at the next key.
#[test]
fn footer_notes_clear_after_a_few_seconds_or_at_the_next_key() {
    use crossterm::event::KeyCode as K;
    let mut a = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW));
    a.server = Some("127.0.0.1:8787".into());
    assert!(footer(&a, 160, 30).contains("theme dark"));
    a.note("theme 'x' not found");
    assert!(footer(&a, 160, 30).contains("theme 'x' not found"));
    a.tick(Ts(NOW + pipwatch::tui::app::NOTICE_SECS - 1));
    assert!(footer(&a, 160, 30).contains("theme 'x' not found"));
    a.tick(Ts(NOW + pipwatch::tui::app::NOTICE_SECS));
    let f = footer(&a, 160, 30);
    assert!(!f.contains("not found") && f.contains("theme dark"), "{f}");

    // Set directly (as the loop does for a link's news), it is timed from
    // the first tick that sees it.
    a.notice = Some("link news".into());
    a.tick(Ts(NOW + 100));
    a.tick(Ts(NOW + 100 + pipwatch::tui::app::NOTICE_SECS - 1));
    assert!(footer(&a, 160, 30).contains("link news"));
    assert_eq!(a.key(K::Char('j'), false), Action::Redraw, "the key clears it, so the screen changes");
    assert!(!footer(&a, 160, 30).contains("link news"));
}

/// `a` with nothing to acknowledge says so.
#[test]
fn ack_without_alerts_says_there_are_none() {
    use crossterm::event::KeyCode as K;
    let mut a = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW));
    assert_eq!(a.key(K::Char('a'), false), Action::Redraw);
    assert!(footer(&a, 160, 30).contains("no alerts to acknowledge"), "{}", footer(&a, 160, 30));
    // With the fixture's raised alert, `a` acknowledges it instead.
    let mut a = app("dark");
    assert!(matches!(a.key(K::Char('a'), false), Action::Ack(alerts) if alerts.len() == 1));
}

/// `f` filters on the pair selected in the focused panel: with the feed
/// focused, the selected signal's pair, not the Pairs row's.
#[test]
fn the_filter_takes_the_pair_of_the_focused_panel() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    let i = Instrument::new("USD_JPY").unwrap();
    let time = Ts(NOW - 3600);
    a.apply(&Envelope {
        seq: 1000,
        event: Event::Signal(Signal {
            id: Signal::make_id(i, Timeframe::H1, time, Side::Sell),
            instrument: i,
            timeframe: Timeframe::H1,
            time,
            side: Side::Sell,
            price: 141.2,
            fast: 141.1,
            slow: 141.3,
            atr: 0.2,
            stop_loss: 141.5,
            take_profit: 140.6,
            strategy: "sma 10/20".into(),
        }),
    });
    let title = |a: &App| {
        let text = format!("{}", render(a, 120, 40).backend());
        text.lines().find(|l| l.contains("Signals (")).unwrap_or_default().to_string()
    };
    // The Pairs row selected is EUR_USD; the feed's first signal is USD_JPY's.
    assert_eq!(a.key(K::Tab, false), Action::Redraw);
    assert_eq!(a.selected_signal().map(|s| s.instrument), Some(i));
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (1 of 3) · USD_JPY"), "{}", title(&a));
    // And from the Pairs panel, its selected row's pair, as before.
    a.key(K::Char('f'), false);
    a.key(K::Char('f'), false);
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (3)"), "{}", title(&a));
    a.key(K::Tab, false);
    a.key(K::Char('f'), false);
    assert!(title(&a).contains("Signals (2 of 3) · EUR_USD"), "{}", title(&a));
}

/// Pairs the panel has no room for are said on its lower border.
#[test]
fn pairs_without_room_are_counted_on_the_panels_border() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    assert!(!format!("{}", render(&a, 60, 16).backend()).contains("more"));
    let more = [("AUD_USD", 0.66), ("NZD_USD", 0.61), ("USD_CAD", 1.34), ("USD_CHF", 0.88)];
    for (seq, (name, base)) in (2001..).zip(more) {
        let i = Instrument::new(name).unwrap();
        a.apply(&Envelope {
            seq,
            event: Event::Candle(CandleRecord {
                instrument: i,
                timeframe: Timeframe::H1,
                time: Ts(NOW - 3600),
                open: base,
                high: base * 1.001,
                low: base * 0.999,
                close: base,
                fast: None,
                slow: None,
                atr: None,
            }),
        });
    }
    let text = format!("{}", render(&a, 60, 16).backend());
    let shown = text.lines().filter(|l| l.contains(" H1 ")).count();
    assert_eq!(shown, 6, "{text}");
    assert!(text.contains("+1 more ↓ (j/k)"), "{text}");
    // Scrolled to the last pair: the hidden one is above.
    for _ in 0..6 {
        a.key(K::Down, false);
    }
    let text = format!("{}", render(&a, 60, 16).backend());
    assert!(text.contains("+1 more ↑ (j/k)"), "{text}");
    // Where every pair fits, nothing is said.
    assert!(!format!("{}", render(&a, 160, 48).backend()).contains("more ↓"));
}

/// The detail chart's legend is on its lower border, not over the newest
/// candles at the top right of the plot.
#[test]
fn the_detail_charts_legend_leaves_the_plot_clear() {
    let mut a = app("dark");
    a.key(crossterm::event::KeyCode::Enter, false);
    for (w, h) in [(100, 30), (60, 16)] {
        let text = format!("{}", render(&a, w, h).backend());
        let legend: Vec<&str> = text.lines().filter(|l| l.contains("• fast")).collect();
        assert_eq!(legend.len(), 1, "{text}");
        assert!(legend[0].starts_with("\"└ • fast  · slow"), "{text}");
    }
}

/// A closed trade shows its outcome on its signal's row (where the panel has
/// room for it), the newest signal of a pair its running R.
#[test]
fn the_signal_feed_shows_each_trades_outcome() {
    let mut a = app("dark");
    let newest = a.view.signals[0].signal.clone();
    let older = a.view.signals[1].signal.clone();
    let before = format!("{}", render(&a, 160, 48).backend());
    assert!(before.contains("open +"), "the newest signal's trade is open: {before}");
    let closed = pipwatch::event::Trade {
        id: older.id.clone(),
        instrument: older.instrument,
        timeframe: older.timeframe,
        side: older.side,
        entry_time: older.time,
        entry: older.price,
        stop_loss: older.stop_loss,
        take_profit: older.take_profit,
        exit_time: Ts(older.time.0 + 7200),
        exit: older.take_profit,
        exit_reason: pipwatch::event::ExitReason::Target,
        gap: false,
        pips: 36.0,
        r: 2.0,
        bars: 2,
        mae_r: -0.2,
        mfe_r: 2.0,
    };
    a.apply(&Envelope { seq: 1000, event: Event::Outcome(closed) });
    let after = format!("{}", render(&a, 160, 48).backend());
    let row =
        after.lines().find(|l| l.contains("✓ target +2.0R")).unwrap_or_else(|| panic!("no outcome shown: {after}"));
    assert!(row.contains(if older.side == Side::Buy { "BUY" } else { "SELL" }), "{row}");
    let pair = a.view.pairs.iter().find(|p| p.instrument == newest.instrument).unwrap();
    assert_eq!((pair.record.trades, pair.record.wins), (1, 1));
    // The pair's track record, in its column.
    let pair_row = after.lines().find(|l| l.contains(&format!("{}  {}", newest.instrument, newest.timeframe))).unwrap();
    assert!(pair_row.contains("100% +2.0R"), "{pair_row}");
    // At 80 columns the outcome gives way.
    assert!(!format!("{}", render(&a, 80, 24).backend()).contains("+2.0R"));
}

/// `r` re-reads the config of the console's own instance: new keys work at
/// once and the old ones stop (the help overlay shows which is which).
#[test]
fn the_reload_key_takes_up_new_console_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let session = Session::new("pipwatch-reload");
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    let cmd = format!(
        "env -i PATH=\"$PATH\" TERM=xterm-256color {} -c {} --data-dir {}; sleep 30",
        bin.display(),
        cfg.display(),
        dir.path().join("data").display(),
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &cmd]);
    wait_for_pane(&session, &["Pairs (7"], &[]);
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\n[console.keys]\nhelp = \"H\"\n").unwrap();
    tmux(&["send-keys", "-t", &session, "r"]);
    wait_for_pane(&session, &["console settings reloaded"], &[]);
    tmux(&["send-keys", "-t", &session, "H"]);
    // Both lines are waited for: a capture can land while the overlay is
    // still being written, its first lines there and its last ones not yet.
    let help = wait_for_pane(&session, &["this help", "reload the config"], &[]);
    let line = help.lines().find(|l| l.contains("this help")).unwrap_or_default();
    assert!(line.split_whitespace().any(|w| w == "H"), "the help names H as its key: {line}");
    tmux(&["send-keys", "-t", &session, "Escape"]);
    wait_for_pane(&session, &["Pairs (7"], &["this help"]);
    // `?` no longer opens it: once the theme key after it has been taken
    // (the footer names the next theme), no help is on the screen.
    tmux(&["send-keys", "-t", &session, "?", "t"]);
    wait_for_pane(&session, &["theme light"], &["this help"]);
}

/// A demo is a time-lapse: a pair's "last signal" age is reckoned on the
/// demo's clock (its candles), not the wall clock far behind it, and the
/// pairs panel says which pairs play history and which are simulated.
#[test]
fn a_demo_reckons_ages_on_its_clock_and_names_its_simulated_pairs() {
    let mut a = App::new("DEMO".into(), Theme::load("dark").unwrap(), Ts(NOW - 400 * 86_400));
    let mut events = events();
    let mut feed = FeedStatus::new("demo", FeedState::Live, None);
    feed.history = vec![Instrument::new("EUR_USD").unwrap()];
    events[0] = Event::Feed(feed);
    for (n, e) in events.into_iter().enumerate() {
        a.apply(&Envelope { seq: n as u64 + 1, event: e });
    }
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("SELL 8h ago"), "{text}");
    assert!(text.contains("Pairs (3) · history: EUR_USD · 2 simulated"), "{text}");
    assert!(text.contains("DEMO ") && text.contains("2024-01-02 11:00"), "the demo clock: {text}");
}

/// The header of a demo at the widths a terminal has: the time-lapse's
/// speed and clock as long as there is room, the status always.
#[test]
fn a_demo_header_at_several_widths() {
    let mut a = App::new("DEMO ×14,400".into(), Theme::load("dark").unwrap(), Ts(NOW));
    for (n, e) in events().into_iter().enumerate() {
        a.apply(&Envelope { seq: n as u64 + 1, event: e });
    }
    let headers: Vec<String> = [60u16, 80, 100, 120, 160]
        .iter()
        .map(|&w| {
            let text = format!("{}", render(&a, w, 24).backend());
            format!("{w:>3}: {}", text.lines().next().unwrap_or_default())
        })
        .collect();
    insta::assert_snapshot!("demo_header_widths", headers.join("\n"));
    assert!(headers.iter().all(|h| h.contains("DEGRADED")), "{headers:#?}");
    assert!(headers[4].contains("DEMO ×14,400 │ 2024-01-02 11:00"), "{}", headers[4]);
}

fn press(a: &mut App, keys: &str) {
    for c in keys.chars() {
        a.key(crossterm::event::KeyCode::Char(c), false);
    }
}

/// `/` filters the pairs and the feed by text (the pair, the side, the
/// outcome); the titles say a filter is on, and Esc clears it.
#[test]
fn slash_filters_pairs_and_signals_by_text_and_esc_clears_it() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    press(&mut a, "/gbp");
    assert!(a.typing);
    // Typed, `q` is text, not quit.
    assert_eq!(a.key(K::Char('q'), false), Action::Redraw);
    a.key(K::Backspace, false);
    a.key(K::Enter, false);
    assert!(!a.typing && a.search == "gbp");
    let text = format!("{}", render(&a, 120, 30).backend());
    assert!(text.contains("Pairs (1 of 3) · /gbp"), "{text}");
    assert!(text.contains("GBP_USD  H1") && !text.contains("EUR_USD  H1"), "{text}");
    assert!(text.contains("no signal matches the filter (/ edits, Esc clears)"), "{text}");
    // A side and an outcome match the feed's rows.
    a.key(K::Esc, false);
    press(&mut a, "/sell open");
    a.key(K::Enter, false);
    let text = format!("{}", render(&a, 120, 30).backend());
    assert!(text.contains("Signals (1 of 2) · /sell open"), "{text}");
    assert!(text.contains("SELL EUR_USD") && !text.contains("BUY  EUR_USD"), "{text}");
    // Esc clears it; the next Esc closes nothing else.
    a.key(K::Esc, false);
    assert!(a.search.is_empty());
    let text = format!("{}", render(&a, 120, 30).backend());
    assert!(text.contains("Signals (2)") && text.contains("Pairs (3"), "{text}");
    // While typing, the footer shows what is typed.
    press(&mut a, "/eu");
    let footer_line = format!("{}", render(&a, 120, 30).backend()).lines().last().unwrap_or_default().to_string();
    assert!(footer_line.contains("/eu▏") && footer_line.contains("Esc clears"), "{footer_line}");
}

/// A click selects the row under it and focuses its panel; the wheel moves
/// the selection of the panel under it, or scrolls the chart.
#[test]
fn the_mouse_selects_rows_and_the_wheel_scrolls() {
    use crossterm::event::{MouseButton, MouseEventKind as M};
    let mut a = app("dark");
    let text = format!("{}", render(&a, 160, 48).backend());
    let lines: Vec<&str> = text.lines().collect();
    // The screen's row of GBP_USD (the backend's lines are quoted: one column in).
    let gbp_row = lines.iter().position(|l| l.contains("│GBP_USD  H1")).unwrap() as u16;
    assert_eq!(a.mouse(M::Down(MouseButton::Left), 5, gbp_row), Action::Redraw);
    assert_eq!((a.focus, a.selected), (pipwatch::tui::app::Focus::Pairs, 1));
    // The chart beside the tables follows.
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("GBP_USD H1 — "), "{text}");
    let signal_row = text.lines().position(|l| l.contains("│01-02 09:00 BUY")).unwrap() as u16;
    a.mouse(M::Down(MouseButton::Left), 5, signal_row);
    assert_eq!((a.focus, a.signal_selected), (pipwatch::tui::app::Focus::Signals, 1));
    a.mouse(M::ScrollUp, 5, signal_row);
    assert_eq!(a.signal_selected, 0);
    // The wheel over the pairs moves that selection, and focuses the panel.
    a.mouse(M::ScrollDown, 5, gbp_row);
    assert_eq!((a.focus, a.selected), (pipwatch::tui::app::Focus::Pairs, 2));
    // Over the chart (zoomed in, so not every candle fits) it scrolls back through the candles.
    press(&mut a, "++");
    let _ = render(&a, 160, 48);
    let chart = a.areas.get().chart;
    assert!(chart.width > 0, "the chart's place was noted");
    a.mouse(M::ScrollUp, chart.x + 2, chart.y + 2);
    assert_eq!(a.chart.offset, 2);
    // A click outside every panel does nothing.
    assert_eq!(a.mouse(M::Down(MouseButton::Left), 0, 0), Action::None);
}

/// The chart's keys: zoom, scroll within the candles kept, back to the
/// newest, and the timeframe switch (one timeframe: said).
#[test]
fn the_chart_keys_zoom_scroll_and_switch_timeframes() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    a.key(K::Enter, false);
    press(&mut a, "++");
    assert_eq!(a.chart.zoom, 3);
    press(&mut a, "+");
    assert_eq!(a.chart.zoom, 3, "3 columns a candle at most");
    press(&mut a, "---");
    assert_eq!(a.chart.zoom, 1);
    // All 40 candles fit at 100 columns: nothing to scroll.
    let _ = render(&a, 100, 30);
    press(&mut a, "h");
    assert_eq!(a.chart.offset, 0);
    // Zoomed in, 20 fit.
    press(&mut a, "++");
    let _ = render(&a, 100, 30);
    press(&mut a, "h");
    assert_eq!(a.chart.offset, pipwatch::tui::app::SCROLL_STEP);
    let text = format!("{}", render(&a, 100, 30).backend());
    assert!(text.contains(&format!(", {} back", pipwatch::tui::app::SCROLL_STEP)), "{text}");
    a.key(K::Home, false);
    let oldest = a.chart.offset;
    assert!(oldest > pipwatch::tui::app::SCROLL_STEP && oldest < 40, "{oldest}");
    let text = format!("{}", render(&a, 100, 30).backend());
    assert!(text.contains("01-01 00:00") || text.contains("12-31"), "the oldest candles: {text}");
    // In the detail view `l` scrolls forward (outside it, it opens the logs).
    press(&mut a, "l");
    assert_eq!(a.chart.offset, oldest - pipwatch::tui::app::SCROLL_STEP);
    assert!(!a.logs);
    a.key(K::End, false);
    assert_eq!(a.chart.offset, 0);
    press(&mut a, "]");
    assert!(a.notice.as_deref().is_some_and(|n| n.contains("runs one timeframe")), "{:?}", a.notice);
}

/// On a short terminal the help overlay says how many keys are below and
/// scrolls to them with j/k.
#[test]
fn the_help_scrolls_where_it_does_not_fit() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    a.key(K::Char('?'), false);
    let text = format!("{}", render(&a, 60, 16).backend());
    assert!(text.contains("more ↓ (j/k)") && !text.contains("log panel"), "{text}");
    for _ in 0..20 {
        a.key(K::Char('j'), false);
    }
    let text = format!("{}", render(&a, 60, 16).backend());
    assert!(text.contains("log panel") && text.contains("↑ (j/k)"), "{text}");
    // Moving in the help does not move the selection beneath it.
    assert_eq!(a.selected, 0);
}

/// The real binary at 170 columns: the selected pair's candle chart beside
/// the tables, `j` and a mouse click move it to another pair, `/` filters,
/// and the terminal gets its mouse back at the end.
#[test]
fn the_real_binary_on_a_wide_terminal_charts_the_pair_chosen_by_key_mouse_or_filter() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::new("pipwatch-wide");
    let out = dir.path().join("out");
    // `cat -v` after the console shows what the terminal was left with.
    let cmd = console_cmd(
        &format!("--data-dir {} --source demo:bundled", dir.path().join("data").display()),
        &format!("echo exited > {}", out.display()),
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "170", "-y", "44", &cmd]);
    // The feed uses its width: its signals' age once the first come.
    wait_for_pane(&session, &["Pairs (7) · history: EUR_USD", "AUD_USD H4 — ", "+/- zoom", " ago"], &[]);
    tmux(&["send-keys", "-t", &session, "j"]);
    wait_for_pane(&session, &["EUR_USD H4 — "], &["AUD_USD H4 — "]);
    // A click on GBP_USD's row (SGR mouse report: button 0 at column, row, 1-based).
    let pane = tmux(&["capture-pane", "-p", "-t", &session]);
    let row = pane.lines().position(|l| l.contains("│GBP_USD  H4")).expect("GBP_USD's row") + 1;
    tmux(&["send-keys", "-t", &session, "-l", &format!("\x1b[<0;5;{row}M\x1b[<0;5;{row}m")]);
    wait_for_pane(&session, &["GBP_USD H4 — "], &["EUR_USD H4 — "]);
    // `/usd_j` leaves one pair, and the chart is its.
    tmux(&["send-keys", "-t", &session, "-l", "/usd_j"]);
    tmux(&["send-keys", "-t", &session, "Enter"]);
    wait_for_pane(&session, &["Pairs (1 of 7) · /usd_j", "USD_JPY H4 — "], &["GBP_USD  H4"]);
    tmux(&["send-keys", "-t", &session, "Escape"]);
    wait_for_pane(&session, &["Pairs (7) · history"], &["/usd_j"]);
    tmux(&["send-keys", "-t", &session, "q"]);
    let start = Instant::now();
    while !out.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.exists(), "the console did not quit");
    // Mouse reporting is off again: tmux says whether the pane still wants the mouse.
    let wants = tmux(&["display-message", "-p", "-t", &session, "#{mouse_any_flag}#{mouse_standard_flag}"]);
    assert_eq!(wants.trim(), "00", "the terminal still reports the mouse to the program");
}

/// On a wide screen, with the signal feed focused, the chart shows the
/// selected signal's pair and that signal's trade.
#[test]
fn the_chart_beside_the_feed_shows_the_selected_signals_trade() {
    use crossterm::event::KeyCode as K;
    let mut a = app("dark");
    a.key(K::Down, false);
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("GBP_USD H1 — "), "{text}");
    a.key(K::Tab, false);
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("EUR_USD H1 — ") && !text.contains("GBP_USD H1 — "), "{text}");
    // Its levels: the selected signal's stop and target.
    let s = a.selected_signal().unwrap().clone();
    assert!(text.contains("┄target") && text.contains("stop "), "{text}");
    a.key(K::Down, false);
    let other = a.selected_signal().unwrap().clone();
    assert_ne!(s.id, other.id);
    let text = format!("{}", render(&a, 160, 48).backend());
    assert!(text.contains("EUR_USD H1 — "), "{text}");
}
