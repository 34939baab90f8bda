//! Discord embeds for signals and alerts, always within Discord's limits.
//!
//! Lengths are measured in UTF-16 code units after trimming, which is never
//! less than the character count Discord documents, so a message that fits
//! here fits there whichever way Discord counts.

use serde::Serialize;

use crate::event::{Alert, AlertState, ExitReason, Signal, Trade};
use crate::store::Message;
use crate::types::{Instrument, Severity, Side};

pub const MAX_EMBEDS: usize = 10;
pub const MAX_TOTAL: usize = 6000;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
pub const MAX_USERNAME: usize = 80;
/// `SUPPRESS_NOTIFICATIONS`: posted without pinging anyone's device.
const SUPPRESS_NOTIFICATIONS: u32 = 1 << 12;

const GREEN: u32 = 0x26A69A;
const RED: u32 = 0xEF5350;
const BLUE: u32 = 0x3498DB;
const AMBER: u32 = 0xF1C40F;
const RESOLVED: u32 = 0x2ECC71;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footer {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embed {
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub color: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    pub footer: Footer,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllowedMentions {
    pub parse: [&'static str; 0],
}

/// One webhook request body.
#[derive(Debug, Clone, Serialize)]
pub struct Payload<'a> {
    pub username: &'a str,
    pub allowed_mentions: AllowedMentions,
    pub embeds: &'a [Embed],
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u32,
}

/// The body of an edit: the message's embeds, rewritten whole (a batched
/// message keeps every signal's embed), pinging nobody.
#[derive(Debug, Clone, Serialize)]
pub struct EditPayload<'a> {
    pub allowed_mentions: AllowedMentions,
    pub embeds: &'a [Embed],
}

impl<'a> EditPayload<'a> {
    pub fn new(embeds: &'a [Embed]) -> Self {
        EditPayload { allowed_mentions: AllowedMentions { parse: [] }, embeds }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl<'a> Payload<'a> {
    /// A message of `embeds`, pinging nobody; `quiet` posts it without a
    /// push notification (status messages).
    pub fn new(username: &'a str, embeds: &'a [Embed], quiet: bool) -> Self {
        Payload {
            username,
            allowed_mentions: AllowedMentions { parse: [] },
            embeds,
            flags: if quiet { SUPPRESS_NOTIFICATIONS } else { 0 },
        }
    }
}

/// The length Discord holds against a limit: trimmed, in UTF-16 units.
pub fn measure(s: &str) -> usize {
    s.trim().encode_utf16().count()
}

/// `s` trimmed and, if longer than `max`, cut at a character boundary with
/// an ellipsis. Never empty: Discord requires field names and values.
pub fn clip(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.is_empty() {
        return "—".into();
    }
    if measure(s) <= max {
        return s.to_string();
    }
    let mut used = 1; // the ellipsis
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if used + c.len_utf16() > max {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    // Trimming again: a cut right after a space would otherwise be counted
    // differently by Discord than here.
    format!("{}…", s[..end].trim_end())
}

impl Embed {
    /// The characters this embed counts towards a message's 6000.
    pub fn size(&self) -> usize {
        measure(&self.title)
            + measure(&self.description)
            + measure(&self.footer.text)
            + self.fields.iter().map(|f| measure(&f.name) + measure(&f.value)).sum::<usize>()
    }

    /// Clips every part to its limit and the whole to `MAX_TOTAL`: the
    /// description gives way first, then field values from the last.
    pub fn fit(mut self) -> Embed {
        self.title = clip(&self.title, MAX_TITLE);
        if !self.description.trim().is_empty() {
            self.description = clip(&self.description, MAX_DESCRIPTION);
        } else {
            self.description.clear();
        }
        self.footer.text = clip(&self.footer.text, MAX_FOOTER);
        self.fields.truncate(MAX_FIELDS);
        for f in &mut self.fields {
            f.name = clip(&f.name, MAX_FIELD_NAME);
            f.value = clip(&f.value, MAX_FIELD_VALUE);
        }
        let mut excess = self.size().saturating_sub(MAX_TOTAL);
        if excess > 0 && !self.description.is_empty() {
            let len = measure(&self.description);
            let keep = len.saturating_sub(excess);
            if keep < 2 {
                self.description.clear();
            } else {
                self.description = clip(&self.description, keep);
            }
            excess = self.size().saturating_sub(MAX_TOTAL);
        }
        for i in (0..self.fields.len()).rev() {
            if excess == 0 {
                break;
            }
            let f = &mut self.fields[i];
            let len = measure(&f.value);
            f.value = clip(&f.value, len.saturating_sub(excess).max(1));
            excess = self.size().saturating_sub(MAX_TOTAL);
        }
        while self.size() > MAX_TOTAL && self.fields.pop().is_some() {}
        self
    }
}

fn price(i: Instrument, p: f64) -> String {
    format!("{:.*}", i.decimals() as usize, p)
}

fn pips(i: Instrument, d: f64) -> String {
    format!("{:+.1} pips", d / i.pip())
}

fn title(demo: bool, text: String) -> String {
    if demo { format!("[DEMO] {text}") } else { text }
}

fn inline(name: &str, value: String) -> Field {
    Field { name: name.into(), value, inline: true }
}

fn millis(t: crate::time::Ts) -> String {
    // Discord wants RFC 3339; candle times are whole seconds.
    let s = t.to_string();
    format!("{}.000Z", s.trim_end_matches('Z'))
}

pub fn signal(s: &Signal, demo: bool) -> Embed {
    let i = s.instrument;
    let (side, color) = match s.side {
        Side::Buy => ("BUY", GREEN),
        Side::Sell => ("SELL", RED),
    };
    Embed {
        title: title(demo, format!("{side} {} {}", i.as_str().replace('_', "/"), s.timeframe)),
        description: format!("{} crossover on the candle of {}", s.strategy, s.time),
        color,
        timestamp: Some(millis(s.time)),
        fields: vec![
            inline("Entry", price(i, s.price)),
            inline("Stop loss", format!("{} ({})", price(i, s.stop_loss), pips(i, s.stop_loss - s.price))),
            inline("Take profit", format!("{} ({})", price(i, s.take_profit), pips(i, s.take_profit - s.price))),
            inline("Fast MA", price(i, s.fast)),
            inline("Slow MA", price(i, s.slow)),
            inline("ATR", format!("{} ({:.1} pips)", price(i, s.atr), s.atr / i.pip())),
        ],
        footer: Footer { text: s.id.clone() },
    }
    .fit()
}

/// How a trade ended, in a few words: "✓ target: +30.0 pips, +2.0R".
fn how_it_ended(t: &Trade) -> String {
    let mark = match t.exit_reason {
        ExitReason::Target => "✓ target",
        ExitReason::Stop => "✗ stop",
        ExitReason::Reversed => "↺ reversed",
        ExitReason::Open => "open",
    };
    let gap = if t.gap { " (through a gap)" } else { "" };
    format!("{mark}{gap}: {:+.1} pips, {:+.2}R after {} candles", t.pips, t.r, t.bars)
}

/// A signal's embed once its trade has closed: the same message, with the
/// outcome in its title and a field, so a channel reads as a track record.
pub fn signal_closed(s: &Signal, t: &Trade, demo: bool) -> Embed {
    let mut e = signal(s, demo);
    let mark = match t.exit_reason {
        ExitReason::Target => "✓",
        ExitReason::Stop => "✗",
        ExitReason::Reversed | ExitReason::Open => "↺",
    };
    e.title = format!("{} {mark} {:+.1}R", e.title, t.r);
    e.color = if t.r > 0.0 {
        GREEN
    } else if t.r < 0.0 {
        RED
    } else {
        BLUE
    };
    e.fields.insert(
        0,
        Field {
            name: "Outcome".into(),
            value: format!("{} at {} ({})", how_it_ended(t), price(s.instrument, t.exit), t.exit_time),
            inline: false,
        },
    );
    e.fit()
}

/// A closed trade as a message of its own (routes that take `outcome`).
pub fn outcome(t: &Trade, demo: bool) -> Embed {
    let i = t.instrument;
    let side = if t.side == Side::Buy { "BUY" } else { "SELL" };
    Embed {
        title: title(demo, format!("{side} {} {} closed {:+.1}R", i.as_str().replace('_', "/"), t.timeframe, t.r)),
        description: how_it_ended(t),
        color: if t.r > 0.0 {
            GREEN
        } else if t.r < 0.0 {
            RED
        } else {
            BLUE
        },
        timestamp: Some(millis(t.exit_time)),
        fields: vec![
            inline("Entry", format!("{} at {}", price(i, t.entry), t.entry_time)),
            inline("Exit", format!("{} at {}", price(i, t.exit), t.exit_time)),
            inline("Stop loss", price(i, t.stop_loss)),
            inline("Take profit", price(i, t.take_profit)),
            inline("MAE / MFE", format!("{:+.2}R / {:+.2}R", t.mae_r, t.mfe_r)),
        ],
        footer: Footer { text: t.id.clone() },
    }
    .fit()
}

pub fn alert(a: &Alert, demo: bool) -> Embed {
    let (label, color) = match (a.state, a.severity) {
        (AlertState::Resolved, _) => ("RESOLVED".to_string(), RESOLVED),
        (_, Severity::Critical) => ("CRITICAL".to_string(), RED),
        (_, Severity::Warning) => ("WARNING".to_string(), AMBER),
        (_, Severity::Info) => ("INFO".to_string(), BLUE),
    };
    Embed {
        title: title(demo, format!("{label}: {}", a.title)),
        description: a.message.clone(),
        color,
        timestamp: Some(millis(a.time)),
        fields: vec![inline("Severity", a.severity.to_string()), inline("Check", a.check.clone())],
        footer: Footer { text: a.id.clone() },
    }
    .fit()
}

/// The embed for an outbox message, and whether it can be posted without a
/// push notification (status, not something to act on).
pub fn for_message(m: &Message, demo: bool) -> (Embed, bool) {
    match m {
        Message::Signal(s) => (signal(s, demo), false),
        Message::Closed(s, t) => (signal_closed(s, t, demo), true),
        Message::Alert(a) => (alert(a, demo), a.state == AlertState::Resolved || a.severity == Severity::Info),
        // A track record, not something to act on at once.
        Message::Outcome(t) => (outcome(t, demo), true),
        // Sent on their own (a PATCH of the signal's message); never batched.
        Message::Edit(t) => (outcome(t, demo), true),
    }
}

/// How many of `embeds`, from the front, fit in one message.
pub fn pack(embeds: &[Embed]) -> usize {
    let mut total = 0;
    let mut n = 0;
    for e in embeds.iter().take(MAX_EMBEDS) {
        total += e.size();
        if total > MAX_TOTAL {
            break;
        }
        n += 1;
    }
    n.max(usize::from(!embeds.is_empty()))
}

/// Why a webhook username would be refused, if it would.
pub fn username_problem(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    let n = name.trim().chars().count();
    if n == 0 || n > MAX_USERNAME {
        Some(format!("must be 1 to {MAX_USERNAME} characters"))
    } else if lower.contains("discord") || lower.contains("clyde") {
        Some("must not contain \"discord\" or \"clyde\" (Discord refuses such webhook names)".into())
    } else if matches!(lower.trim(), "everyone" | "here") {
        Some("must not be \"everyone\" or \"here\"".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Ts;
    use crate::types::Timeframe;
    use proptest::prelude::*;

    fn sig() -> Signal {
        let i = Instrument::new("USD_JPY").unwrap();
        Signal {
            id: "USD_JPY:H4:2024-01-02T08:00:00Z:sell".into(),
            instrument: i,
            timeframe: Timeframe::H4,
            time: Ts(1_704_182_400),
            side: Side::Sell,
            price: 141.234,
            fast: 141.1,
            slow: 141.2,
            atr: 0.35,
            stop_loss: 141.759,
            take_profit: 140.184,
            strategy: "sma 10/20".into(),
        }
    }

    /// Discord's limits, checked independently of `Embed::size`, counting
    /// characters the way Discord documents them.
    fn within_limits(embeds: &[Embed]) -> Result<(), String> {
        let c = |s: &str| s.trim().chars().count();
        if embeds.len() > MAX_EMBEDS {
            return Err("too many embeds".into());
        }
        let mut total = 0;
        for e in embeds {
            if c(&e.title) > 256 || c(&e.description) > 4096 || c(&e.footer.text) > 2048 || e.fields.len() > 25 {
                return Err(format!("embed part too long: {e:?}"));
            }
            for f in &e.fields {
                if c(&f.name) == 0 || c(&f.value) == 0 || c(&f.name) > 256 || c(&f.value) > 1024 {
                    return Err(format!("bad field {f:?}"));
                }
            }
            total += c(&e.title)
                + c(&e.description)
                + c(&e.footer.text)
                + e.fields.iter().map(|f| c(&f.name) + c(&f.value)).sum::<usize>();
        }
        if total > 6000 { Err(format!("{total} characters in all")) } else { Ok(()) }
    }

    #[test]
    fn a_signal_embed_says_what_a_trader_needs() {
        let e = signal(&sig(), true);
        assert_eq!(e.title, "[DEMO] SELL USD/JPY H4");
        assert_eq!(e.color, RED);
        assert_eq!(e.footer.text, "USD_JPY:H4:2024-01-02T08:00:00Z:sell");
        assert_eq!(e.timestamp.as_deref(), Some("2024-01-02T08:00:00.000Z"));
        let field = |n: &str| e.fields.iter().find(|f| f.name == n).map(|f| f.value.clone()).unwrap_or_default();
        assert_eq!(field("Entry"), "141.234");
        assert_eq!(field("Stop loss"), "141.759 (+52.5 pips)");
        assert_eq!(field("Take profit"), "140.184 (-105.0 pips)");
        assert!(!signal(&sig(), false).title.starts_with("[DEMO]"));
        let json = serde_json::to_value(Payload::new("pipwatch", &[e], false)).unwrap();
        assert_eq!(json["allowed_mentions"], serde_json::json!({"parse": []}));
        assert!(json.get("flags").is_none());
    }

    #[test]
    fn long_text_is_clipped_cleanly() {
        assert_eq!(clip("  hello  ", 10), "hello");
        assert_eq!(clip("", 10), "—");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
        // Emoji are two UTF-16 units: never split, never over.
        let e = clip(&"😀".repeat(10), 7);
        assert_eq!(e, "😀😀😀…");
        assert!(measure(&e) <= 7);
    }

    #[test]
    fn five_thousand_character_fields_fit() {
        let big = "x".repeat(5000);
        let a = Alert {
            id: "a".into(),
            check: big.clone(),
            severity: Severity::Critical,
            state: AlertState::Raised,
            title: big.clone(),
            message: big.clone(),
            time: Ts(0),
        };
        let e = alert(&a, false);
        within_limits(std::slice::from_ref(&e)).unwrap();
        assert!(e.title.ends_with('…') && e.description.ends_with('…'));
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ a-zA-Z0-9]{0,40}",
            proptest::collection::vec(any::<char>(), 0..1200).prop_map(|v| v.into_iter().collect()),
            (0usize..7000).prop_map(|n| "é😀 ".repeat(n / 3)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn anything_packs_within_every_limit(
            parts in proptest::collection::vec((text(), text(), text(), proptest::collection::vec((text(), text()), 0..30)), 1..13)
        ) {
            let embeds: Vec<Embed> = parts
                .into_iter()
                .map(|(t, d, f, fields)| Embed {
                    title: t,
                    description: d,
                    color: 0,
                    timestamp: None,
                    fields: fields.into_iter().map(|(name, value)| Field { name, value, inline: false }).collect(),
                    footer: Footer { text: f },
                }.fit())
                .collect();
            let mut rest = &embeds[..];
            while !rest.is_empty() {
                let n = pack(rest);
                prop_assert!(n >= 1);
                prop_assert_eq!(within_limits(&rest[..n]), Ok(()));
                rest = &rest[n..];
            }
        }
    }

    #[test]
    fn usernames_discord_refuses_are_caught() {
        assert_eq!(username_problem("pipwatch"), None);
        assert!(username_problem("My Discord bot").is_some());
        assert!(username_problem("clyde").is_some());
        assert!(username_problem("").is_some());
        assert!(username_problem("here").is_some());
        assert!(username_problem(&"a".repeat(81)).is_some());
    }
}
