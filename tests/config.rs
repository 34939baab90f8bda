//! Config layering and error messages, through the library.

use std::path::PathBuf;

use pipwatch::config::{Config, LoadOptions, SourceKind, load};

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("pipwatch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn opts(file: Option<PathBuf>, env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        file,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        source_flag: None,
        flags: Vec::new(),
        // As the binary loads it: with the notifier's and the console's rules.
        checks: pipwatch::config_checks(),
        offline: false,
    }
}

fn error(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, text);
    let err = load(&opts(Some(p.clone()), env)).expect_err("config should be rejected").to_string();
    err.replace(&p.display().to_string(), "FILE")
}

#[test]
fn no_file_is_the_demo() {
    let loaded = load(&opts(None, &[])).unwrap();
    assert_eq!(loaded.config.strategy, Config::default().strategy);
    assert!(loaded.config.market.oanda.token.is_empty());
    assert_eq!(loaded.config.market.source, SourceKind::Demo);
    assert_eq!(loaded.config.market.instruments.len(), 7);
}

#[test]
fn the_example_config_is_the_defaults() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/pipwatch.toml");
    let loaded = load(&opts(Some(path), &[("PIPWATCH_OANDA_TOKEN", "t")])).unwrap();
    let defaults = load(&opts(None, &[("PIPWATCH_OANDA_TOKEN", "t")])).unwrap();
    assert_eq!(loaded.config, defaults.config);
    assert_eq!(loaded.config.market.oanda.token.expose(), "t");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn semantic_errors_name_file_line_key_value_and_rule() {
    let err = error("[strategy]\nma = \"sma\"\nfast = 30\n", &[]);
    assert_eq!(err, "FILE:3:8: strategy.fast = '30': fast (30) must be smaller than slow (20)");
}

#[test]
fn unknown_keys_are_errors_with_a_line() {
    let err = error("[market]\nsource = \"demo\"\n\n[strategy]\nfsat = 5\n", &[]);
    assert!(err.starts_with("FILE:5:8: strategy.fsat = '5': unknown field `fsat`, expected one of"), "{err}");
}

#[test]
fn wrong_types_and_bad_names() {
    let err = error("[market]\ninstruments = [\"EUR_USD\", \"eurusd\"]\n", &[]);
    assert!(
        err.starts_with("FILE:2:27: market.instruments[1] = 'eurusd': 'eurusd' is not an instrument name"),
        "{err}"
    );
    let err = error("[market]\ntimeframes = [\"H5\"]\n", &[]);
    assert!(err.contains("market.timeframes[0] = 'H5'") && err.contains("unknown variant `H5`"), "{err}");
    let err = error("[market.demo]\ncandle_every = \"soon\"\n", &[]);
    assert_eq!(
        err,
        "FILE:2:16: market.demo.candle_every = 'soon': 'soon' is not a duration: write e.g. \"1s\", \"15m\", \"2h\" or \"0s\""
    );
    let err = error("[strategy]\nfast = \"ten\"\n", &[]);
    assert!(err.starts_with("FILE:2:8: strategy.fast = 'ten': invalid type: string \"ten\", expected u32"), "{err}");
}

#[test]
fn syntax_errors_have_a_line() {
    let err = error("[market]\nsource = demo\n", &[]);
    assert!(err.starts_with("FILE:2:10: not valid TOML"), "{err}");
}

#[test]
fn all_problems_are_listed_at_once() {
    let err = error("[strategy]\nfast = 0\natr = 0\nsl_mult = -1.0\n", &[]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("FILE:2:8: strategy.fast = '0': 0 is out of range"));
    assert!(lines[1].starts_with("FILE:3:7: strategy.atr = '0'"));
    assert!(lines[2].starts_with("FILE:4:11: strategy.sl_mult = '-1.0'"));
}

/// A wrong type in one table does not hide the other tables' mistakes, and
/// the default standing in for it is not judged against its neighbours.
#[test]
fn a_wrong_type_does_not_hide_the_other_tables_rules() {
    let err = error("[market]\ntimeframes = \"H4\"\n\n[strategy]\nfast = 30\nslow = 20\n", &[]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("FILE:2:14: market.timeframes = 'H4': invalid type"), "{err}");
    assert!(lines[1].starts_with("FILE:5:8: strategy.fast = '30': fast (30) must be smaller than slow (20)"), "{err}");
    // fast's default (10) stands in for "x": not reported against slow = 5.
    let err = error("[strategy]\nfast = \"x\"\nslow = 5\n", &[]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("FILE:2:8: strategy.fast = 'x': invalid type"), "{err}");
}

/// serde stops at the first key of the wrong type or name; every such key is
/// still listed, in the file's order, and nothing else twice.
#[test]
fn every_wrong_type_and_unknown_key_is_listed_at_once() {
    let err = error(
        "[market]\nsource = \"demoo\"\ntimeframes = \"H4\"\n\n[market.demo]\nseed = \"seven\"\nspeed = 3\n\n\
         [[notify.routes]]\nname = \"signals\"\nwebhook = \"https://discord.com/api/webhooks/1/x\"\ndelay = 15\n",
        &[],
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].starts_with("FILE:2:10: market.source = 'demoo': unknown variant `demoo`"), "{err}");
    assert!(lines[1].starts_with("FILE:3:14: market.timeframes = 'H4': invalid type"), "{err}");
    assert!(lines[2].starts_with("FILE:6:8: market.demo.seed = 'seven': invalid type"), "{err}");
    assert!(lines[3].starts_with("FILE:7:9: market.demo.speed = '3': unknown field `speed`"), "{err}");
    assert!(lines[4].starts_with("FILE:12:9: notify.routes[0].delay = '15': invalid type"), "{err}");
}

#[test]
fn overrides_are_validated_merged_and_warned() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        write(&dir, "[strategy.overrides.USD_JPY]\nma = \"ema\"\nfast = 5\n\n[strategy.overrides.XAU_USD]\nfast = 3\n");
    let loaded = load(&opts(Some(p), &[])).unwrap();
    let set = loaded.config.strategy.set();
    let jpy = "USD_JPY".parse().unwrap();
    assert_eq!(set.for_instrument(jpy).label(), "ema 5/20");
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("XAU_USD is not in market.instruments"), "{:?}", loaded.warnings);

    let err = error("[strategy.overrides.USD_JPY]\nfast = 25\n", &[]);
    assert_eq!(err, "FILE:2:8: strategy.overrides.USD_JPY.fast = '25': fast (25) must be smaller than slow (20)");
    let err = error("[strategy.overrides.usdjpy]\nfast = 5\n", &[]);
    assert!(err.contains("strategy.overrides.usdjpy: 'usdjpy' is not an instrument name"), "{err}");
}

#[test]
fn environment_overrides_the_file_and_is_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "[strategy]\nfast = 8\n");
    let loaded = load(&opts(
        Some(p.clone()),
        &[("PIPWATCH_STRATEGY__FAST", "5"), ("PIPWATCH_MARKET__TIMEFRAMES", "[\"H1\", \"D\"]")],
    ))
    .unwrap();
    assert_eq!(loaded.config.strategy.fast, 5);
    assert_eq!(loaded.config.market.timeframes.len(), 2);
    // A list the way shells write one: comma-separated, no TOML quoting.
    let loaded = load(&opts(
        Some(p.clone()),
        &[("PIPWATCH_MARKET__INSTRUMENTS", "EUR_USD, USD_JPY"), ("PIPWATCH_MARKET__TIMEFRAMES", "M15")],
    ))
    .unwrap();
    let names: Vec<&str> = loaded.config.market.instruments.iter().map(|i| i.as_str()).collect();
    assert_eq!(names, ["EUR_USD", "USD_JPY"]);
    assert_eq!(loaded.config.market.timeframes.len(), 1);
    let err = load(&opts(Some(p.clone()), &[("PIPWATCH_STRATEGY__FAST", "50")])).unwrap_err().to_string();
    assert_eq!(
        err,
        "environment variable PIPWATCH_STRATEGY__FAST: strategy.fast: fast (50) must be smaller than slow (20)"
    );
    let err = load(&opts(Some(p), &[("PIPWATCH_STRATEGY__BOGUS", "1")])).unwrap_err().to_string();
    assert!(
        err.starts_with("environment variable PIPWATCH_STRATEGY__BOGUS: strategy.bogus: unknown field `bogus`"),
        "{err}"
    );
}

#[test]
fn env_interpolation_and_secrets() {
    let text = "[market]\nsource = \"oanda\"\n[market.oanda]\naccount_id = \"${ACCT}\"\ntoken = \"${TOK}\"\n";
    let err = error(text, &[("ACCT", "101-004-1-001")]);
    assert_eq!(
        err,
        "FILE:5:9: market.oanda.token: the environment variable TOK is not set: export it, or write the value here"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, text);
    let loaded = load(&opts(Some(p), &[("ACCT", "101-004-1-001"), ("TOK", "s3cr3t-token")])).unwrap();
    assert_eq!(loaded.config.market.oanda.token.expose(), "s3cr3t-token");
    assert_eq!(loaded.config.market.oanda.token.var(), Some("TOK"));
    let shown = toml::to_string(&loaded.config).unwrap();
    assert!(!shown.contains("s3cr3t") && shown.contains("token = \"${TOK}\""), "{shown}");
    assert!(!format!("{:?}", loaded.config).contains("s3cr3t"));
}

#[test]
fn demo_does_not_need_oanda_variables() {
    // The defaults name ${PIPWATCH_OANDA_TOKEN}; unset, it only matters for source = "oanda".
    assert!(load(&opts(None, &[])).is_ok());
    let err = load(&LoadOptions { source_flag: Some("oanda".into()), ..opts(None, &[]) }).unwrap_err().to_string();
    assert!(err.contains("--source 'oanda'") || err.contains("PIPWATCH_OANDA_ACCOUNT is not set"), "{err}");
    assert!(err.contains("PIPWATCH_OANDA_TOKEN is not set"), "{err}");
}

#[test]
fn routes_and_server_rules() {
    let err = error(
        "[[notify.routes]]\nname = \"a\"\nwebhook = \"not a url\"\n[[notify.routes]]\nname = \"a\"\nwebhook = \"https://discord.com/api/webhooks/1/x\"\n",
        &[],
    );
    assert!(err.contains("FILE:3:11: notify.routes[0].webhook: the value is not a Discord webhook URL"), "{err}");
    assert!(err.contains("FILE:5:8: notify.routes[1].name = 'a': 'a' is used by another route"), "{err}");
    assert!(!err.contains("not a url"), "a webhook value leaked: {err}");
    // A URL that is not a webhook (a channel link) is caught too, without echoing it.
    let err = error("[[notify.routes]]\nname = \"a\"\nwebhook = \"https://discord.com/channels/1/s3cr3t\"\n", &[]);
    assert!(err.contains("notify.routes[0].webhook: the value is not a Discord webhook URL"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    let err = error("[notify]\nusername = \"Discord Bot\"\nretry_min = \"0s\"\nmax_attempts = 0\n", &[]);
    assert!(err.contains("notify.username = 'Discord Bot': must not contain \"discord\""), "{err}");
    assert!(err.contains("notify.retry_min = '0s': must be more than 0s"), "{err}");
    assert!(err.contains("notify.max_attempts = '0': must be at least 1"), "{err}");
    let err = error("[server]\nlisten = \"0.0.0.0:8787\"\n", &[]);
    assert!(err.contains("server.token must be set"), "{err}");
}

#[test]
fn health_thresholds_are_checked() {
    let err = error(
        "[health]\ncpu_critical = 50.0\nfailure_rate_warning = 2.0\nstale_critical = \"1m\"\nheartbeat_url = \"nope\"\n",
        &[],
    );
    assert!(err.contains("health.cpu_critical = '50.0': must be at least health.cpu_warning (85)"), "{err}");
    assert!(err.contains("health.failure_rate_warning = '2.0': must be above 0 and at most 1"), "{err}");
    assert!(err.contains("health.stale_critical = '1m': must not be shorter than health.stale_warning"), "{err}");
    assert!(err.contains("health.heartbeat_url: the value is not an http(s) URL") && !err.contains("nope"), "{err}");
}

#[test]
fn console_keys_are_checked() {
    let err = error("[console]\ntheme = \"neon\"\n[console.keys]\nquit = \"p\"\nhelp = \"j\"\nlogs = \"ll\"\n", &[]);
    assert!(err.contains("console.keys.quit = 'p': is also console.keys.pause"), "{err}");
    assert!(err.contains("console.keys.help = 'j': must be one printable character"), "{err}");
    assert!(err.contains("console.keys.logs = 'll': must be one printable character"), "{err}");
    assert!(err.contains("console.theme = 'neon': is not a theme"), "{err}");
}

#[test]
fn source_flag_sets_csv_path() {
    let loaded = load(&LoadOptions { source_flag: Some("csv:/data/EUR_USD.csv".into()), ..opts(None, &[]) }).unwrap();
    assert_eq!(loaded.config.market.source, SourceKind::Csv);
    assert_eq!(loaded.config.market.csv.path, "/data/EUR_USD.csv");
    let err = load(&LoadOptions { source_flag: Some("bloomberg".into()), ..opts(None, &[]) }).unwrap_err().to_string();
    assert!(err.starts_with("--source 'bloomberg': market.source: unknown variant `bloomberg`"), "{err}");
}

/// Environment mistakes are named: an override of a key that does not
/// exist is blamed on its variable (not on the defaults or the file) with
/// the nearest real one; a variable with one underscore where two belong
/// is a warning with the variable it was probably meant to be.
#[test]
fn environment_mistakes_are_named_with_a_hint() {
    let err = load(&opts(None, &[("PIPWATCH_FOO__BAR", "1")])).unwrap_err().to_string();
    assert!(err.starts_with("environment variable PIPWATCH_FOO__BAR: foo: unknown field `foo`"), "{err}");
    assert!(err.ends_with(": unset PIPWATCH_FOO__BAR or check its spelling"), "{err}");
    assert!(!err.contains("built-in defaults"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "[strategy]\nfast = 8\n");
    let err = load(&opts(Some(p.clone()), &[("PIPWATCH_STRATEGY__FAAST", "5")])).unwrap_err().to_string();
    assert!(err.starts_with("environment variable PIPWATCH_STRATEGY__FAAST: strategy.faast: unknown field"), "{err}");
    assert!(err.ends_with("did you mean PIPWATCH_STRATEGY__FAST?"), "{err}");

    let loaded = load(&opts(Some(p.clone()), &[("PIPWATCH_STRATEGY_FAST", "5"), ("PIPWATCH_NOTHING", "x")])).unwrap();
    assert_eq!(loaded.config.strategy.fast, 8);
    assert_eq!(
        loaded.warnings,
        [
            "environment variable PIPWATCH_NOTHING is not one pipwatch reads, so it changes nothing (an override is PIPWATCH_TABLE__KEY, with two underscores, e.g. PIPWATCH_STRATEGY__FAST)",
            "environment variable PIPWATCH_STRATEGY_FAST is not one pipwatch reads, so it changes nothing: did you mean PIPWATCH_STRATEGY__FAST? (an override has two underscores between table and key)",
        ]
    );

    // What pipwatch reads otherwise is not flagged: its own variables, the
    // documented secrets, and whatever this config interpolates.
    let p = write(&dir, "[[notify.routes]]\nname = \"x\"\nwebhook = \"${PIPWATCH_MY_HOOK}\"\n");
    let quiet = [
        ("PIPWATCH_CONFIG", "x.toml"),
        ("PIPWATCH_LOG", "debug"),
        ("PIPWATCH_SERVER_TOKEN", "t"),
        ("PIPWATCH_OANDA_TOKEN", "t"),
        ("PIPWATCH_OANDA_ACCOUNT", "a"),
        ("PIPWATCH_DISCORD_SIGNALS", "https://discord.com/api/webhooks/1/a"),
        ("PIPWATCH_MY_HOOK", "https://discord.com/api/webhooks/2/b"),
        ("PIPWATCH_SERVER__LISTEN", "\"127.0.0.1:0\""),
    ];
    let loaded = load(&opts(Some(p), &quiet)).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn the_log_level_is_a_filter_and_a_misspelt_level_is_named() {
    let err = error("[log]\nlevel = \"infi\"\n", &[]);
    assert!(err.contains("log.level = 'infi': 'infi' is not a level or TARGET=LEVEL"), "{err}");
    assert!(err.contains("FILE:2"), "the line is named: {err}");
    let err = error("[log]\nlevel = \"info,sled=loud\"\n", &[]);
    assert!(err.contains("'sled=loud' is not a level"), "{err}");
    for good in ["debug", "info,sled=warn", "warn,pipwatch::notify=debug", "OFF"] {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, &format!("[log]\nlevel = \"{good}\"\n"));
        let c = load(&opts(Some(p), &[])).unwrap().config;
        assert_eq!(c.log.level.as_deref(), Some(good));
    }
}
