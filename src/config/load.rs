//! Reading, layering, interpolating and validating a config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

use super::{Config, ConfigError, Origin, Problem, Secret, SourceKind, StrategyOverride};
use crate::engine::StrategyParams;
use crate::types::Instrument;

/// What to load. `env` is passed in (not read here) so tests are hermetic.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `--source demo|demo:bundled|demo:DIR|oanda|csv:PATH`.
    pub source_flag: Option<String>,
    /// Other flags that set config keys: (dotted key, value, the flag as typed).
    pub flags: Vec<(String, Value, String)>,
    /// Rules that other modules own, run after the config's own.
    pub checks: Vec<Check>,
    /// For a mode that uses no network (`replay`, `backtest`): secrets it
    /// does not use may be unset. They use the strategy and nothing else:
    /// the market source, the routes and the server are not started, so a
    /// CSV source's path and the server token need not be set either. A
    /// value that is set but wrong is still a problem.
    pub offline: bool,
}

/// A rule another module owns (the notifier knows what a webhook URL is, the
/// console knows its themes): the problems it finds, as (dotted key, what is
/// wrong and how to fix it). The config locates each in the file. The
/// binary's list is `pipwatch::config_checks`.
pub type Check = fn(&Config) -> Vec<(String, String)>;

impl LoadOptions {
    /// The process environment and the given file.
    pub fn from_process(file: Option<PathBuf>, source_flag: Option<String>) -> Self {
        LoadOptions {
            file,
            env: std::env::vars().collect(),
            source_flag,
            flags: Vec::new(),
            checks: Vec::new(),
            offline: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub origin: Origin,
    /// Things that are allowed but probably not meant, e.g. an override for an
    /// instrument that is not traded.
    pub warnings: Vec<String>,
}

/// A dotted key split into table keys and array indices.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            segs.push(Seg::Key(rest[..b].to_string()));
            rest = &rest[b..];
            while let Some(end) = rest.find(']') {
                if let Ok(i) = rest[1..end].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = &rest[end + 1..];
            }
        } else {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

struct Source<'a> {
    name: String,
    text: &'a str,
    doc: Option<toml::Spanned<DeTable<'a>>>,
    /// Dotted key → the environment variable or flag that set it.
    set_by: BTreeMap<String, String>,
    /// `LoadOptions::offline`: secrets of the parts not run need not be set.
    offline: bool,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
        (line, col)
    }

    /// The span of the value at `path` in the file, if the file sets it.
    fn span(&self, path: &str) -> Option<std::ops::Range<usize>> {
        self.value_span(path).map(|(span, _)| span)
    }

    /// The span and whether the value is a table (whose text is not a value to quote).
    fn value_span(&self, path: &str) -> Option<(std::ops::Range<usize>, bool)> {
        let doc = self.doc.as_ref()?;
        let mut table = doc.get_ref();
        let mut value: Option<&toml::Spanned<DeValue<'_>>> = None;
        for seg in parse_path(path) {
            let next = match (seg, value.map(|v| v.get_ref())) {
                (Seg::Key(k), None) => table.iter().find(|(key, _)| key.get_ref().as_ref() == k).map(|(_, v)| v),
                (Seg::Key(k), Some(DeValue::Table(t))) => {
                    t.iter().find(|(key, _)| key.get_ref().as_ref() == k).map(|(_, v)| v)
                }
                (Seg::Index(i), Some(DeValue::Array(a))) => a.get(i),
                _ => None,
            }?;
            if let DeValue::Table(t) = next.get_ref() {
                table = t;
            }
            value = Some(next);
        }
        value.map(|v| (v.span(), matches!(v.get_ref(), DeValue::Table(_))))
    }

    /// Where `path` came from: the variable or flag that set it, else the
    /// file line (of the key itself or of its nearest parent in the file).
    fn locate(&self, path: &str) -> String {
        // A key no layer below the environment has (PIPWATCH_FOO__BAR makes
        // `foo`): the variable that made it, not the file or the defaults.
        if !self.set_by.contains_key(path)
            && self.span(path).is_none()
            && let Some(by) = self.set_below(path)
        {
            return by.to_string();
        }
        let mut p = path.to_string();
        loop {
            if let Some(by) = self.set_by.get(&p) {
                return by.clone();
            }
            if let Some(span) = self.span(&p) {
                let (line, col) = self.line_col(span.start);
                return format!("{}:{line}:{col}", self.name);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.name.clone(),
            }
        }
    }

    /// What set a key under `path`, if something did.
    fn set_below(&self, path: &str) -> Option<&str> {
        self.set_by
            .iter()
            .find(|(k, _)| k.strip_prefix(path).is_some_and(|rest| rest.starts_with(['.', '['])))
            .map(|(_, by)| by.as_str())
    }

    /// The environment variable that set `path` (or a key under it).
    fn env_var(&self, path: &str) -> Option<&str> {
        let by = self.set_by.get(path).map(String::as_str).or_else(|| self.set_below(path))?;
        by.strip_prefix("environment variable ")
    }

    fn raw(&self, path: &str) -> Option<String> {
        if self.set_by.contains_key(path) {
            return None;
        }
        let (span, is_table) = self.value_span(path)?;
        if is_table {
            return None;
        }
        let raw = self.text.get(span)?.trim().trim_matches('"');
        (raw.len() <= 80 && !raw.contains('\n')).then(|| raw.to_string())
    }

    fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let key = match self.raw(path) {
            Some(v) if !is_secret_path(path) => format!("{path} = '{v}'"),
            _ => path.to_string(),
        };
        Problem { location: self.locate(path), key, message: message.into() }
    }
}

fn is_secret_path(path: &str) -> bool {
    path.ends_with(".token")
        || path.ends_with(".webhook")
        || path.ends_with(".account_id")
        || path.ends_with(".heartbeat_url")
}

fn get_path<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut t = table;
    for p in parents {
        let entry = t.entry(p.clone()).or_insert_with(|| Value::Table(Table::new()));
        t = entry.as_table_mut().ok_or_else(|| format!("'{p}' is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Replaces `${NAME}` in every string; unset names are reported, not fatal yet
/// (an OANDA token need not be set to run the demo).
fn interpolate(
    value: &mut Value,
    path: &str,
    env: &BTreeMap<&str, &str>,
    vars: &mut BTreeMap<String, String>,
    unset: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let Some(len) = rest[start..].find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let name = &rest[start + 2..start + len];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => unset.push((path.to_string(), name.to_string())),
                }
                vars.insert(path.to_string(), name.to_string());
                rest = &rest[start + len + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env, vars, unset);
            }
        }
        Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                interpolate(v, &p, env, vars, unset);
            }
        }
        _ => {}
    }
}

/// Problems by where their key is in the file (serde finds them in the
/// order of the struct's fields); those from elsewhere last.
/// `strategy` of `strategy.overrides.EUR_USD.fast`, `market` of `market.instruments[1]`.
fn top_table(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

fn in_file_order(mut problems: Vec<(usize, Problem)>) -> Vec<Problem> {
    problems.sort_by_key(|(at, _)| *at);
    problems.into_iter().map(|(_, p)| p).collect()
}

/// The value at `path`, if there is one.
fn value_at<'v>(value: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Table(t)) => t.get(k),
        (Seg::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

/// Sets the value at `path` to `to`, or removes it when `to` is None.
/// False when `path` does not lead to a value.
fn replace_at(value: &mut Value, path: &[Seg], to: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut v = value;
    for seg in parents {
        v = match (seg, v) {
            (Seg::Key(k), Value::Table(t)) => match t.get_mut(k) {
                Some(next) => next,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, v, to) {
        (Seg::Key(k), Value::Table(t), Some(to)) => t.insert(k.clone(), to).is_some(),
        (Seg::Key(k), Value::Table(t), None) => t.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a), Some(to)) if *i < a.len() => {
            a[*i] = to;
            true
        }
        _ => false,
    }
}

/// Turns a serialized config into a `toml::Table` so that defaults hold the
/// same `${NAME}` templates a file would.
fn defaults_table() -> Table {
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `PIPWATCH_TABLE__KEY` variables over the file.
fn apply_env(table: &mut Table, env: &[(String, String)], src: &mut Source<'_>) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("PIPWATCH_") else { continue };
        if !rest.contains("__") {
            continue; // PIPWATCH_CONFIG, PIPWATCH_OANDA_TOKEN...: not overrides.
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = toml::from_str::<Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v"));
        // Not TOML: a plain string, or for a list (instruments, timeframes,
        // a route's events) the comma-separated form shells use.
        let value = value.unwrap_or_else(|| match get_path(table, &path) {
            Some(Value::Array(_)) => Value::Array(
                raw.split(',').map(str::trim).filter(|v| !v.is_empty()).map(|v| Value::String(v.into())).collect(),
            ),
            _ => Value::String(raw.clone()),
        });
        let dotted = path.join(".");
        set_path(table, &path, value)
            .map_err(|m| ConfigError::one(format!("environment variable {var}"), dotted.clone(), m))?;
        src.set_by.insert(dotted, format!("environment variable {var}"));
    }

    Ok(())
}

/// `--source` and the other flags that set keys, over everything else.
fn apply_flags(table: &mut Table, opts: &LoadOptions, src: &mut Source<'_>) -> Result<(), ConfigError> {
    if let Some(flag) = &opts.source_flag {
        let (kind, path) = match flag.split_once(':') {
            Some(("csv", p)) => ("csv", Some(("csv", p))),
            // `demo:bundled` or `demo:DIR`: what the demo plays.
            Some(("demo", p)) => ("demo", Some(("demo", p))),
            _ => (flag.as_str(), None),
        };
        set_path(table, &["market".into(), "source".into()], Value::String(kind.into()))
            .map_err(|m| ConfigError::one("--source".into(), "market.source", m))?;
        src.set_by.insert("market.source".into(), format!("--source '{flag}'"));
        if let Some((section, p)) = path {
            let key = if section == "csv" { "path" } else { "history" };
            let dotted = format!("market.{section}.{key}");
            set_path(table, &["market".into(), section.into(), key.into()], Value::String(p.into()))
                .map_err(|m| ConfigError::one("--source".into(), dotted.clone(), m))?;
            src.set_by.insert(dotted, format!("--source '{flag}'"));
        }
    }

    for (key, value, flag) in &opts.flags {
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        set_path(table, &path, value.clone()).map_err(|m| ConfigError::one(flag.clone(), key.clone(), m))?;
        src.set_by.insert(key.clone(), flag.clone());
    }

    Ok(())
}

/// The config, its problems with their place in the file, and the tables a
/// default stood in for a wrong value in.
type ReadAll = (Config, Vec<(usize, Problem)>, std::collections::HashSet<String>);

/// The layered values as a `Config`, with every wrong key reported (not only
/// the first), and the top-level tables where a default stood in for one.
fn read_all(mut root: Value, src: &Source<'_>) -> Result<ReadAll, ConfigError> {
    // serde stops at the first key of the wrong type or name. To report them
    // all at once, each one found is put back to its default (an unknown key
    // is dropped) and the rest read again.
    let defaults = Value::Table(defaults_table());
    let mut problems = Vec::new();
    let mut reported = std::collections::HashSet::new();
    // Top-level tables where a wrong value was put back to its default.
    let mut stood_in = std::collections::HashSet::new();
    let config: Config = loop {
        let e = match serde_path_to_error::deserialize(root.clone()) {
            Ok(config) => break config,
            Err(e) => e,
        };
        let mut path = e.path().to_string();
        let full = e.inner().to_string();
        // toml's value deserializer appends "in `key`": we say where ourselves.
        let message = full.split("\nin `").next().unwrap_or(&full).trim().to_string();
        let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()).map(str::to_string);
        if let Some(field) = &unknown
            && !(path == *field || path.ends_with(&format!(".{field}")))
        {
            path = if path == "." { field.to_string() } else { format!("{path}.{field}") };
        }
        // Failing again after its stand-in (a key with no default to fall back
        // on) only repeats the first report.
        if !reported.insert(path.clone()) {
            return Err(ConfigError::Invalid { problems: in_file_order(problems) });
        }
        let problem = match (&unknown, src.env_var(&path)) {
            (Some(_), Some(var)) => {
                let hint = nearest_variable(var).map(|v| format!(": did you mean {v}?")).unwrap_or_default();
                src.problem(&path, format!("{message}: unset {var} or check its spelling{hint}"))
            }
            (Some(_), None) => src.problem(&path, format!("{message}: remove it or check its spelling")),
            (None, _) => src.problem(&path, message),
        };
        problems.push((src.span(&path).map_or(usize::MAX, |s| s.start), problem));
        let segs = parse_path(&path);
        let stand_in = if unknown.is_some() { None } else { value_at(&defaults, &segs).cloned() };
        if unknown.is_none() {
            stood_in.insert(top_table(&path).to_string());
        }
        if problems.len() >= 50 || !replace_at(&mut root, &segs, stand_in) {
            return Err(ConfigError::Invalid { problems: in_file_order(problems) });
        }
    };
    Ok((config, problems, stood_in))
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let (text, name, origin) = match &opts.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
            (text, path.display().to_string(), Origin::File(path.clone()))
        }
        None => (String::new(), "built-in defaults".to_string(), Origin::Defaults),
    };
    let mut src = Source { name, text: &text, doc: None, set_by: BTreeMap::new(), offline: opts.offline };
    let doc = DeTable::parse(&text).map_err(|e| {
        let (line, col) = e.span().map_or((1, 1), |s| src.line_col(s.start));
        ConfigError::one(format!("{}:{line}:{col}", src.name), "", format!("not valid TOML: {}", e.message().trim()))
    })?;
    src.doc = Some(doc);
    let file_table: Table =
        toml::from_str(&text).map_err(|e| ConfigError::one(src.name.clone(), "", e.message().to_string()))?;

    // The file must have the right shape on its own, so its errors point at its lines.
    let mut table = defaults_table();
    merge(&mut table, file_table);

    apply_env(&mut table, &opts.env, &mut src)?;

    apply_flags(&mut table, opts, &mut src)?;

    let env: BTreeMap<&str, &str> = opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut vars = BTreeMap::new();
    let mut unset = Vec::new();
    let mut root = Value::Table(table);
    interpolate(&mut root, "", &env, &mut vars, &mut unset);

    let (mut config, problems, stood_in) = read_all(root, &src)?;
    let mut problems = in_file_order(problems);

    // Put the variable names back on secrets so errors and `config show` can name them.
    let secret = |s: &mut Secret, path: &str| *s = Secret::resolved(s.expose().to_string(), vars.get(path).cloned());
    secret(&mut config.market.oanda.account_id, "market.oanda.account_id");
    secret(&mut config.market.oanda.token, "market.oanda.token");
    secret(&mut config.server.token, "server.token");
    for (i, r) in config.notify.routes.iter_mut().enumerate() {
        secret(&mut r.webhook, &format!("notify.routes[{i}].webhook"));
    }

    for (path, var) in &unset {
        let in_use = match path.as_str() {
            // `replay` and `backtest` read files: no feed, no routes, no server.
            _ if opts.offline => false,
            p if p.starts_with("market.oanda.") => config.market.source == SourceKind::Oanda,
            p if p.starts_with("market.csv.") => config.market.source == SourceKind::Csv,
            _ => true,
        };
        if in_use {
            problems.push(src.problem(
                path,
                format!("the environment variable {var} is not set: export it, or write the value here"),
            ));
        }
    }
    let mut warnings = unknown_variables(&opts.env, vars.values().chain(unset.iter().map(|(_, v)| v)));
    // Values checked against each other (fast < slow...) are judged in the
    // tables where no stand-in default took a wrong value's place: there a
    // default would be judged, not the user's value. The other tables'
    // mistakes are reported in the same run, not one round at a time.
    let before = problems.len();
    validate(&config, &src, opts, &mut problems, &mut warnings);
    let checked = problems.split_off(before);
    problems.extend(checked.into_iter().filter(|p| !stood_in.contains(top_table(&p.key))));
    if problems.is_empty() { Ok(Loaded { config, origin, warnings }) } else { Err(ConfigError::Invalid { problems }) }
}

fn check_params(p: &StrategyParams, base: &str, src: &Source<'_>, problems: &mut Vec<Problem>) {
    for (name, v) in [("fast", p.fast), ("slow", p.slow), ("atr", p.atr)] {
        if !(1..=1000).contains(&v) {
            problems.push(
                src.problem(&format!("{base}.{name}"), format!("{v} is out of range: a period is 1 to 1000 candles")),
            );
        }
    }
    if p.fast >= p.slow {
        problems.push(
            src.problem(&format!("{base}.fast"), format!("fast ({}) must be smaller than slow ({})", p.fast, p.slow)),
        );
    }
    for (name, v) in [("sl_mult", p.sl_mult), ("tp_mult", p.tp_mult)] {
        if !(v.is_finite() && v > 0.0) {
            problems.push(src.problem(
                &format!("{base}.{name}"),
                format!("{v} is not allowed: a multiple of the ATR above 0, e.g. 1.5"),
            ));
        }
    }
}

fn check_url(url: &str, path: &str, src: &Source<'_>, problems: &mut Vec<Problem>) {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !ok {
        let shown = if is_secret_path(path) { "the value".to_string() } else { format!("'{url}'") };
        problems.push(src.problem(path, format!("{shown} is not an http(s) URL")));
    }
}

/// The rules of every table. Each table's own, in file order of the
/// tables; `checks` are the rules other modules own (see [`Check`]).
fn validate(c: &Config, src: &Source<'_>, opts: &LoadOptions, problems: &mut Vec<Problem>, warnings: &mut Vec<String>) {
    let checks = &opts.checks;
    validate_market(c, src, problems);
    validate_strategy(c, src, problems, warnings);
    validate_routes(c, src, opts.offline, problems);
    validate_notify(c, src, problems);
    validate_server(c, src, problems);
    validate_health(c, src, problems);
    validate_console(c, src, problems);
    validate_log(c, src, problems);
    for check in checks {
        for (key, message) in check(c) {
            problems.push(src.problem(&key, message));
        }
    }
}

fn validate_market(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    let m = &c.market;
    if m.instruments.is_empty() {
        problems.push(src.problem("market.instruments", "is empty: list at least one instrument, e.g. [\"EUR_USD\"]"));
    }
    for (i, inst) in m.instruments.iter().enumerate() {
        if m.instruments[..i].contains(inst) {
            problems.push(src.problem(&format!("market.instruments[{i}]"), format!("{inst} is listed twice")));
        }
    }
    if m.timeframes.is_empty() {
        problems.push(src.problem("market.timeframes", "is empty: list at least one, e.g. [\"H4\"]"));
    }
    for (i, tf) in m.timeframes.iter().enumerate() {
        if m.timeframes[..i].contains(tf) {
            problems.push(src.problem(&format!("market.timeframes[{i}]"), format!("{tf} is listed twice")));
        }
    }
    if m.demo.candle_every.0 < std::time::Duration::from_millis(10) {
        problems.push(src.problem("market.demo.candle_every", "must be at least 10ms"));
    }
    if m.demo.history.trim().is_empty() {
        problems.push(src.problem(
            "market.demo.history",
            "is empty: \"synthetic\", \"bundled\" or a directory of INSTRUMENT.csv files",
        ));
    }
    match m.source {
        // History reads its own files: the configured source is not run.
        _ if src.offline => {}
        SourceKind::Csv if m.csv.path.trim().is_empty() => {
            problems.push(
                src.problem("market.csv.path", "is empty: name a CSV file or a directory of INSTRUMENT.csv files"),
            );
        }
        SourceKind::Demo => {
            let h = m.demo.history.trim();
            if !matches!(h, "synthetic" | "bundled" | "") && !std::path::Path::new(h).exists() {
                problems.push(src.problem(
                    "market.demo.history",
                    format!(
                        "'{h}' does not exist: use \"synthetic\", \"bundled\" or a directory of INSTRUMENT.csv files"
                    ),
                ));
            }
        }
        SourceKind::Oanda => {
            check_url(&m.oanda.rest_url, "market.oanda.rest_url", src, problems);
            check_url(&m.oanda.stream_url, "market.oanda.stream_url", src, problems);
            for (key, what, var) in [
                ("account_id", "your OANDA account id", "PIPWATCH_OANDA_ACCOUNT"),
                ("token", "your OANDA API token", "PIPWATCH_OANDA_TOKEN"),
            ] {
                let s = if key == "token" { &m.oanda.token } else { &m.oanda.account_id };
                if s.is_empty() && !unset_reported(problems, key) {
                    problems
                        .push(src.problem(&format!("market.oanda.{key}"), format!("is empty: set {var} to {what}")));
                }
            }
        }
        _ => {}
    }
}

fn validate_strategy(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>, warnings: &mut Vec<String>) {
    let m = &c.market;
    check_params(&c.strategy.params(), "strategy", src, problems);
    let set = c.strategy.set();
    for (name, o) in &c.strategy.overrides {
        let base = format!("strategy.overrides.{name}");
        match Instrument::new(name) {
            Err(e) => problems.push(src.problem(&base, e.to_string())),
            Ok(i) => {
                if o == &StrategyOverride::default() {
                    warnings.push(format!("{}: {base} changes nothing", src.locate(&base)));
                }
                if !m.instruments.contains(&i) {
                    warnings.push(format!(
                        "{}: {base}: {name} is not in market.instruments, so this override is unused",
                        src.locate(&base)
                    ));
                }
                check_params(&set.for_instrument(i), &base, src, problems);
            }
        }
    }
}

/// `offline`: the mode sends nothing, so a webhook it would not use may be empty.
fn validate_routes(c: &Config, src: &Source<'_>, offline: bool, problems: &mut Vec<Problem>) {
    for (i, r) in c.notify.routes.iter().enumerate() {
        let base = format!("notify.routes[{i}]");
        if r.name.trim().is_empty() {
            problems.push(src.problem(&format!("{base}.name"), "is missing: give each route a name"));
        } else if c.notify.routes[..i].iter().any(|o| o.name == r.name) {
            problems.push(src.problem(&format!("{base}.name"), format!("'{}' is used by another route", r.name)));
        }
        if r.webhook.is_empty() && !offline && !unset_reported(problems, &format!("{base}.webhook")) {
            problems.push(
                src.problem(
                    &format!("{base}.webhook"),
                    "is empty: paste the Discord webhook URL or use \"${ENV_NAME}\"",
                ),
            );
        }
        if r.events.is_empty() {
            problems.push(src.problem(&format!("{base}.events"), "is empty: list \"signal\", \"alert\" or both"));
        }
    }
}

fn validate_notify(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    let n = &c.notify;
    if n.timeout.0 < std::time::Duration::from_millis(100) {
        problems.push(src.problem("notify.timeout", "must be at least 100ms"));
    }
    if n.retry_min.0.is_zero() {
        problems
            .push(src.problem("notify.retry_min", "must be more than 0s: retrying at once is what gets an IP banned"));
    }
    if n.retry_max.0 < n.retry_min.0 {
        problems.push(src.problem("notify.retry_max", "must not be shorter than notify.retry_min"));
    }
    if n.max_attempts == 0 {
        problems.push(src.problem("notify.max_attempts", "must be at least 1"));
    }
    if n.breaker_failures == 0 {
        problems.push(src.problem("notify.breaker_failures", "must be at least 1"));
    }
    if n.max_age.0 < n.retry_max.0 {
        problems.push(src.problem("notify.max_age", "must not be shorter than notify.retry_max"));
    }
}

fn validate_server(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    match c.server.listen.parse::<SocketAddr>() {
        Err(_) => problems.push(src.problem("server.listen", format!("'{}' is not an address: write IP:PORT, e.g. 127.0.0.1:8787", c.server.listen))),
        Ok(addr) if !addr.ip().is_loopback() && c.server.token.is_empty() && !src.offline => problems.push(src.problem(
            "server.listen",
            format!("{addr} is reachable from other machines, so server.token must be set (e.g. token = \"${{PIPWATCH_SERVER_TOKEN}}\")"),
        )),
        Ok(_) => {}
    }
    if c.server.max_clients == 0 {
        problems.push(src.problem("server.max_clients", "must be at least 1"));
    }
    if c.server.history == 0 {
        problems.push(src.problem("server.history", "must be at least 1"));
    }
}

fn validate_health(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    let h = &c.health;
    if h.sample_every.0 < std::time::Duration::from_millis(100) {
        problems.push(src.problem("health.sample_every", "must be at least 100ms"));
    }
    let pairs: [(&str, f64, f64, f64); 5] = [
        ("cpu", h.cpu_warning, h.cpu_critical, 100.0),
        ("memory", h.memory_warning, h.memory_critical, 100.0),
        ("disk", h.disk_warning, h.disk_critical, 100.0),
        ("failure_rate", h.failure_rate_warning, h.failure_rate_critical, 1.0),
        ("queue", h.queue_warning as f64, h.queue_critical as f64, f64::INFINITY),
    ];
    for (name, w, cr, max) in pairs {
        if !(w > 0.0 && w <= max) {
            problems.push(src.problem(&format!("health.{name}_warning"), format!("must be above 0 and at most {max}")));
        }
        if cr < w || cr > max {
            problems.push(src.problem(
                &format!("health.{name}_critical"),
                format!("must be at least health.{name}_warning ({w}) and at most {max}"),
            ));
        }
    }
    for (name, w, cr) in [
        ("oldest_pending", h.oldest_pending_warning, h.oldest_pending_critical),
        ("stale", h.stale_warning, h.stale_critical),
        ("latency_p95", h.latency_p95_warning, h.latency_p95_critical),
    ] {
        if cr.0 < w.0 {
            problems.push(src.problem(
                &format!("health.{name}_critical"),
                format!("must not be shorter than health.{name}_warning"),
            ));
        }
    }
    if !h.heartbeat_url.is_empty() {
        let ok = reqwest::Url::parse(h.heartbeat_url.expose())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            problems.push(src.problem("health.heartbeat_url", "the value is not an http(s) URL"));
        }
    }
    if h.heartbeat_every.0 < std::time::Duration::from_secs(1) {
        problems.push(src.problem("health.heartbeat_every", "must be at least 1s"));
    }
}

fn validate_console(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    let keys = c.console.keys.all();
    for (i, (name, key)) in keys.iter().enumerate() {
        let path = format!("console.keys.{name}");
        let mut chars = key.chars();
        match (chars.next(), chars.next()) {
            (Some(k), None) if !k.is_control() && !matches!(k, 'j' | 'k') => {
                if let Some((other, _)) = keys[i + 1..].iter().find(|(_, o)| o == key) {
                    problems.push(src.problem(&path, format!("is also console.keys.{other}")));
                }
            }
            _ => problems.push(
                src.problem(&path, "must be one printable character other than j and k (which move the selection)"),
            ),
        }
    }
}

fn validate_log(c: &Config, src: &Source<'_>, problems: &mut Vec<Problem>) {
    if let Some(level) = &c.log.level
        && let Err(e) = log_filter(level)
    {
        problems.push(src.problem(
            "log.level",
            format!(
                "{e}; use a level (off, error, warn, info, debug, trace) or TARGET=LEVEL pairs, e.g. info,sled=warn"
            ),
        ));
    }
}

/// Stricter than tracing's own parser, which takes a misspelt level
/// (`infi`) as a target name and quietly logs nothing of it.
fn log_filter(filter: &str) -> Result<(), String> {
    let is_level = |l: &str| l.trim().parse::<tracing_subscriber::filter::LevelFilter>().is_ok();
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            _ => directive,
        };
        if directive.is_empty() || !is_level(level) {
            return Err(format!("'{directive}' is not a level or TARGET=LEVEL"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| e.to_string())
}

fn unset_reported(problems: &[Problem], key: &str) -> bool {
    problems.iter().any(|p| p.key.ends_with(key) && p.message.contains("is not set"))
}

/// The variables pipwatch reads besides `PIPWATCH_TABLE__KEY` overrides and
/// the `${NAME}`s of the config in use: its own, and the secrets its
/// documentation names (set for a service, they must not be warned about
/// by a `replay` run without its config).
const OWN_VARIABLES: [&str; 5] =
    ["PIPWATCH_CONFIG", "PIPWATCH_LOG", "PIPWATCH_SERVER_TOKEN", "PIPWATCH_OANDA_ACCOUNT", "PIPWATCH_OANDA_TOKEN"];
/// `${PIPWATCH_DISCORD_SIGNALS}`, `${PIPWATCH_DISCORD_FREE}`...: the
/// documented names of webhook variables, one per route.
const OWN_PREFIXES: [&str; 1] = ["PIPWATCH_DISCORD_"];

/// Every override variable the defaults allow, e.g. `PIPWATCH_STRATEGY__FAST`.
fn override_variables() -> Vec<String> {
    fn walk(t: &Table, path: &mut Vec<String>, out: &mut Vec<String>) {
        for (k, v) in t {
            path.push(k.to_ascii_uppercase());
            match v {
                Value::Table(sub) if !sub.is_empty() => walk(sub, path, out),
                _ => out.push(format!("PIPWATCH_{}", path.join("__"))),
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&defaults_table(), &mut Vec::new(), &mut out);
    // Tables empty by default, so absent from the defaults.
    out.extend(["PIPWATCH_NOTIFY__ROUTES".to_string(), "PIPWATCH_STRATEGY__OVERRIDES".to_string()]);
    out
}

/// The valid variable nearest to `var`, when it is near enough to be what
/// was meant: the same letters with other underscores
/// (`PIPWATCH_STRATEGY_FAST`), else a typo or two away.
fn nearest_variable(var: &str) -> Option<String> {
    let letters = |s: &str| s.replace('_', "");
    let candidates: Vec<String> =
        override_variables().into_iter().chain(OWN_VARIABLES.iter().map(|s| s.to_string())).collect();
    if let Some(same) = candidates.iter().find(|c| letters(c) == letters(var) && c.as_str() != var) {
        return Some(same.clone());
    }
    let limit = (var.len() / 6).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&c, var), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `PIPWATCH_*` variables that are no override (one underscore where two
/// belong, e.g. `PIPWATCH_STRATEGY_FAST`), not pipwatch's own and not a
/// `${NAME}` of this config: they change nothing, which a user who set one
/// would not guess. Warnings, not errors: the environment may be shared
/// with another config's variables.
fn unknown_variables<'a>(env: &[(String, String)], interpolated: impl Iterator<Item = &'a String>) -> Vec<String> {
    let interpolated: std::collections::HashSet<&str> = interpolated.map(String::as_str).collect();
    let mut names: Vec<&str> = env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("PIPWATCH_") && !k.contains("__"))
        .filter(|k| !OWN_VARIABLES.contains(k) && !OWN_PREFIXES.iter().any(|p| k.starts_with(p)))
        .filter(|k| !interpolated.contains(k))
        .collect();
    names.sort_unstable();
    names
        .into_iter()
        .map(|var| match nearest_variable(var) {
            Some(near) => format!(
                "environment variable {var} is not one pipwatch reads, so it changes nothing: did you mean {near}? (an override has two underscores between table and key)"
            ),
            None => format!(
                "environment variable {var} is not one pipwatch reads, so it changes nothing (an override is PIPWATCH_TABLE__KEY, with two underscores, e.g. PIPWATCH_STRATEGY__FAST)"
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_variable_is_offered_only_when_near() {
        assert_eq!(nearest_variable("PIPWATCH_STRATEGY_FAST").as_deref(), Some("PIPWATCH_STRATEGY__FAST"));
        assert_eq!(nearest_variable("PIPWATCH_MARKET_DEMO_SEED").as_deref(), Some("PIPWATCH_MARKET__DEMO__SEED"));
        assert_eq!(nearest_variable("PIPWATCH_STRATEGY__FAAST").as_deref(), Some("PIPWATCH_STRATEGY__FAST"));
        assert_eq!(nearest_variable("PIPWATCH_CONFG").as_deref(), Some("PIPWATCH_CONFIG"));
        assert_eq!(nearest_variable("PIPWATCH_FOO__BAR"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
