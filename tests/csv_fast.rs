//! The fast CSV reader (one thread, or several on chunks) gives exactly the
//! rows the csv crate's reader gives: the same candles, the same bad rows
//! with the same lines and messages, for files with every shape of row the
//! readers meet (CRLF, blank lines, spaces, missing fields, bad numbers,
//! times out of order, quotes part way).

use pipwatch::market::csv::{CsvCandles, Row};
use pipwatch::types::{Instrument, Timeframe};
use proptest::prelude::*;

fn rows_of(mut r: CsvCandles) -> (Vec<Row>, u64, u64) {
    let rows: Vec<Row> = r.by_ref().collect();
    (rows, r.rows, r.bad_rows)
}

fn all_readers(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("EUR_USD.csv");
    std::fs::write(&path, text).unwrap();
    let i = Instrument::new("EUR_USD").unwrap();
    let reference = CsvCandles::from_reader(
        Box::new(std::fs::File::open(&path).unwrap()),
        path.display().to_string(),
        i,
        Timeframe::H1,
    );
    let fast = CsvCandles::open_with(&path, i, Timeframe::H1, 1);
    let (reference, fast) = match (reference, fast) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => return assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("one reader opened the file: {:?} {:?}", a.err(), b.err()),
    };
    let want = rows_of(reference);
    assert_eq!(rows_of(fast), want, "one thread:\n{text}");
    for (threads, chunk) in [(2, 7), (3, 64), (2, 1 << 20)] {
        let par = CsvCandles::open_chunked(&path, i, Timeframe::H1, threads, chunk).unwrap();
        assert_eq!(rows_of(par), want, "{threads} threads, chunks of {chunk}:\n{text}");
    }
}

fn row() -> impl Strategy<Value = String> {
    let good =
        (0u32..4, 1u32..30, 0u32..24, 10_000u32..20_000, 0u32..50, 0u32..50).prop_map(|(fmt, d, h, o, up, dn)| {
            let (o, hi, lo, c) =
                (o as f64 / 1e4, (o + up) as f64 / 1e4, (o - dn) as f64 / 1e4, (o + up / 2) as f64 / 1e4);
            let time = match fmt {
                0 => format!("2024-01-{d:02} {h:02}:00:00"),
                1 => format!("2024-01-{d:02}T{h:02}:00:00Z"),
                2 => format!("{d:02}.01.2024 {h:02}:00:00.000"),
                _ => format!("{}", 1_704_067_200 + i64::from(d) * 86_400 + i64::from(h) * 3600),
            };
            format!("{time},{o},{hi},{lo},{c},{}", up * 10)
        });
    prop_oneof![
        8 => good,
        1 => Just(String::new()),
        1 => Just("   ".to_string()),
        1 => Just(",,,,,".to_string()),
        1 => Just("2024-01-02 03:00:00,1.1,1.2".to_string()),
        1 => Just("2024-01-02 03:00:00,1.1,abc,1.0,1.1,5".to_string()),
        1 => Just("yesterday,1.1,1.2,1.0,1.1,5".to_string()),
        1 => Just(" 2024-01-05 03:00:00 , 1.1 ,1.2, 1.0 ,1.1 , 5 ".to_string()),
        1 => Just("2024-01-02 03:00:00,1.3,1.2,1.0,1.1,5".to_string()),
        1 => Just("2024-01-02 03:00:00,1e0,1.2,1.0,1.1,5".to_string()),
        1 => Just("2024-01-02 03:00:00,1.1,1.2,1.0,1.1,5,extra".to_string()),
        1 => Just("\"2024-01-02 05:00:00\",1.1,1.2,1.0,1.1,5".to_string()),
        1 => Just("2024-01-30 05:00:00,1.1,1.2,1.0,1.1,\"5,5\"".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn the_fast_readers_give_the_csv_crates_rows(
        header in prop::sample::select(vec!["time,open,high,low,close,volume", "Gmt time,Open,High,Low,Close,Volume", " time , open,high,low,close,volume"]),
        rows in prop::collection::vec(row(), 0..60),
        crlf: bool,
        final_newline: bool,
        blank_after_header: bool,
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = format!("{header}{nl}");
        if blank_after_header {
            text.push_str(nl);
        }
        text.push_str(&rows.join(nl));
        if final_newline {
            text.push_str(nl);
        }
        all_readers(&text);
    }
}

#[test]
fn a_file_of_many_chunks_reads_the_same() {
    let mut text = String::from("time,open,high,low,close,volume\n");
    for i in 0..20_000i64 {
        let t = 1_704_067_200 + i * 3600;
        if i % 997 == 0 {
            text.push_str("bad row\n");
        }
        if i % 1201 == 0 {
            text.push('\n');
        }
        text.push_str(&format!(
            "{t},1.{:05},1.{:05},1.{:05},1.{:05},{}\n",
            10_000 + i % 50,
            10_060 + i % 50,
            9_990 + i % 50,
            10_020 + i % 50,
            i
        ));
    }
    all_readers(&text);
}
