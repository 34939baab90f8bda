//! The fast path of the CSV reader: the file in large blocks, split at line
//! feeds and commas in place, no allocation per row.
//!
//! It reads CSV without quotes, which is every price history we have met;
//! the csv crate's reader (the one that reads the header) gives the same
//! records for such a file, field for field (`tests/csv_fast.rs` holds the
//! two to the same rows). The first line that holds a quote is handed back
//! ([`Next::Quoted`]) so the csv crate can read the rest.

use std::io::Read;
use std::ops::Range;

/// Bytes asked of the file at a time: large enough that a read costs
/// nothing beside parsing, small enough to stay in the L2 cache's reach.
const BLOCK: usize = 1 << 20;

pub(super) struct Blocks {
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// The first byte of `buf` not yet handed out.
    start: usize,
    /// The end of the bytes read into `buf`.
    end: usize,
    eof: bool,
    /// The offset in the file of `buf[0]`.
    base: u64,
    /// The line number of the line that starts at `start`.
    line: u64,
    /// The first quote in `buf[start..end]`, if there is one.
    quote: Option<usize>,
    /// The fields of the last line, as ranges of `buf` (trimmed).
    fields: Vec<Range<usize>>,
    /// Where the commas and line feeds of `buf[start..end]` are, in order,
    /// found in one pass per block (a search per line costs more than the
    /// line's parsing), and the next one not yet used.
    delims: Vec<u32>,
    next_delim: usize,
}

/// What [`Blocks::next_line`] found.
pub(super) enum Next {
    /// A line (its number); its fields are [`Blocks::field`].
    Line(u64),
    /// The next line (this number) holds a quote: its bytes and what
    /// follows, for the csv crate's reader.
    Quoted(u64, Vec<u8>),
    End,
}

impl Blocks {
    /// `src` is positioned at `offset` in the file, at the start of line `line`.
    pub(super) fn new(src: Box<dyn Read + Send>, offset: u64, line: u64) -> Blocks {
        Blocks {
            src,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            base: offset,
            line,
            quote: None,
            fields: Vec::with_capacity(8),
            delims: Vec::new(),
            next_delim: 0,
        }
    }

    /// Lines already in memory (a chunk of a file, cut at a line feed),
    /// numbered from `line`.
    pub(super) fn from_bytes(bytes: Vec<u8>, line: u64) -> Blocks {
        let mut b = Blocks::new(Box::new(std::io::empty()), 0, line);
        b.end = bytes.len();
        b.buf = bytes;
        b.eof = true;
        b.quote = memchr::memchr(b'"', &b.buf);
        delimiters(&b.buf, &mut b.delims);
        b
    }

    /// The buffer, for the next chunk (its pages already mapped).
    pub(super) fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes of the file consumed so far (through the last line handed out).
    pub(super) fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The file after the lines handed out: what is buffered, then the rest.
    pub(super) fn into_rest(self) -> (Vec<u8>, Box<dyn Read + Send>) {
        (self.buf[self.start..self.end].to_vec(), self.src)
    }

    /// Field `i` of the last line, trimmed of ASCII whitespace as the csv
    /// crate's `Trim::All` does.
    #[inline]
    pub(super) fn field(&self, i: usize) -> Option<&[u8]> {
        self.fields.get(i).map(|r| &self.buf[r.clone()])
    }

    /// The buffer from field `i`'s first byte on, past the field (bytes
    /// after it are read, and masked off, by [`decimal_wide`]).
    #[inline]
    pub(super) fn tail(&self, i: usize) -> Option<&[u8]> {
        self.fields.get(i).map(|r| &self.buf[r.start..])
    }

    /// The line the next `next_line` starts on.
    pub(super) fn line(&self) -> u64 {
        self.line
    }

    pub(super) fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Moves what is left to the front of `buf` and reads another block.
    fn refill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.quote = self.quote.map(|q| q - self.start);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + BLOCK {
            // u32 offsets: a block never grows past 4 GiB (a line that long is not a candle).
            let grown = (self.end + BLOCK).min(u32::MAX as usize);
            if grown <= self.end {
                return Err(std::io::Error::other("a line longer than 4 GiB"));
            }
            self.buf.resize(grown, 0);
        }
        let scanned = self.end;
        while self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.quote.is_none() {
            self.quote = memchr::memchr(b'"', &self.buf[scanned..self.end]).map(|q| q + scanned);
        }
        // What is left of the last block is less than a line: found again with the new one.
        self.delims.clear();
        self.next_delim = 0;
        delimiters(&self.buf[..self.end], &mut self.delims);
        Ok(())
    }

    /// The next line, split into fields. Empty lines are lines too (the
    /// caller skips them as it skips a row of empty fields).
    pub(super) fn next_line(&mut self) -> std::io::Result<Next> {
        if self.start == self.end && !self.eof {
            self.refill()?;
        }
        if self.start == self.end {
            return Ok(Next::End);
        }
        self.fields.clear();
        let from = self.start;
        let mut field_start = from;
        let to = loop {
            match self.delims.get(self.next_delim) {
                Some(&at) => {
                    let at = at as usize;
                    self.next_delim += 1;
                    if self.buf[at] == b'\n' {
                        break at;
                    }
                    self.fields.push(trim(&self.buf, field_start..at));
                    field_start = at + 1;
                }
                // The last line, without a line feed.
                None if self.eof => break self.end,
                None => {
                    // The line goes on in the next block: start it again there.
                    self.fields.clear();
                    self.refill()?;
                    return self.next_line();
                }
            }
        };
        if self.quote.is_some_and(|q| q <= to) {
            let line = self.line;
            let bytes = self.buf[from..self.end].to_vec();
            self.start = self.end;
            self.delims.clear();
            self.next_delim = 0;
            return Ok(Next::Quoted(line, bytes));
        }
        self.fields.push(trim(&self.buf, field_start..to));
        let line = self.line;
        self.line += 1;
        self.start = (to + 1).min(self.end);
        Ok(Next::Line(line))
    }
}

/// Appends the offsets of every comma and line feed in `bytes` to `out`.
///
/// Eight bytes at a time: a CSV row of prices has a delimiter every ten
/// bytes or so, too dense for a search that starts over after each hit
/// (memchr2 spent 14% of a replay here), so each word is tested for both
/// bytes at once and its hits are read off the resulting bit mask.
fn delimiters(bytes: &[u8], out: &mut Vec<u32>) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    /// 0x80 in each byte of `x` that is zero, and nothing else (exact: no
    /// borrow runs from one byte into the next).
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
    }
    let comma = u64::from_ne_bytes([b','; 8]);
    let newline = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0u32;
    for word in words.by_ref() {
        let x = u64::from_le_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        let mut hits = zero_bytes(x ^ comma) | zero_bytes(x ^ newline);
        while hits != 0 {
            out.push(at + hits.trailing_zeros() / 8);
            hits &= hits - 1;
        }
        at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b',' || b == b'\n' {
            out.push(at + i as u32);
        }
    }
}

#[inline]
fn trim(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && buf[r.start].is_ascii_whitespace() {
        r.start += 1;
    }
    while r.end > r.start && buf[r.end - 1].is_ascii_whitespace() {
        r.end -= 1;
    }
    r
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A plain decimal (`-12.34500`) the quick way, or None for anything else
/// (exponents, long mantissas, `inf`, stray bytes), which the caller hands
/// to the standard parser.
///
/// Exact: with the digits as an integer m < 2^53 and k ≤ 22 decimals, both
/// m and 10^k are doubles exactly, and one IEEE division rounds m / 10^k
/// correctly, so the result is the standard parser's, bit for bit (Clinger's
/// fast path, which the standard parser also takes first).
#[inline]
pub(super) fn decimal(s: &[u8]) -> Option<f64> {
    let (negative, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    // A plain loop: a memchr call costs more than a field of ten bytes.
    let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
        Some(p) => (&digits[..p], &digits[p + 1..]),
        None => (digits, &[][..]),
    };
    // 15 digits keep m below 2^53 whatever they are; 8 fit one word each.
    let count = whole.len() + fraction.len();
    if count == 0 || count > 15 || whole.len() > 8 || fraction.len() > 8 {
        return None;
    }
    // Two independent words: a digit-by-digit loop is a chain of dependent
    // multiply-adds, which was a fifth of a replay's time.
    let m = eight_digits(whole)? * POW10_INT[fraction.len()] + eight_digits(fraction)?;
    let v = m as i64 as f64 / POW10[fraction.len()];
    Some(if negative { -v } else { v })
}

/// [`decimal`] for a field of at most eight bytes whose buffer has eight
/// bytes from its start (`tail`): the field in one load, its point found
/// and its digits split without a loop. None where it cannot tell (a sign,
/// a longer field, no room): [`decimal`] decides those.
#[inline]
pub(super) fn decimal_wide(s: &[u8], tail: &[u8]) -> Option<f64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const DOTS: u64 = 0x2e2e_2e2e_2e2e_2e2e;
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = s.len();
    let first = *s.first()?;
    if n > 8 || first == b'-' || first == b'+' {
        return None;
    }
    let w = u64::from_le_bytes(tail.get(..8)?.try_into().ok()?);
    // The field's bytes only (the first in the lowest byte); the rest 0.
    let w = if n == 8 { w } else { w & ((1u64 << (8 * n)) - 1) };
    // A zero byte where the point is: the lowest such byte is exact.
    let x = w ^ DOTS;
    let dots = x.wrapping_sub(LOW) & !x & HIGH;
    // The digits without the point, the first in the lowest byte: one
    // conversion for the whole number instead of one for each side of it.
    let (digits, k, fraction) = match dots {
        0 => (w, n, 0),
        d => {
            let p = (d.trailing_zeros() / 8) as usize;
            let before = w & ((1u64 << (8 * p)) - 1);
            // Two shifts: the point may be the eighth byte.
            let after = (w >> (8 * p)) >> 8;
            (before | (after << (8 * p)), n - 1, n - p - 1)
        }
    };
    // Right-aligned in a word of '0's (the layout `digits_value` reads).
    let aligned = match k {
        0 => return None,
        8 => digits,
        k => (digits << (8 * (8 - k))) | (ZEROS >> (8 * k)),
    };
    let m = digits_value(aligned)?;
    // Below 2^53: as a signed integer, one conversion instruction instead of
    // the unsigned one's four.
    Some(m as i64 as f64 / POW10[fraction])
}

const POW10_INT: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Up to eight ASCII digits as their value, or None if any byte is not a
/// digit: the digits are right-aligned in a word of '0's and combined in
/// pairs, fours and eights (three multiplications in all).
#[inline(always)]
fn eight_digits(d: &[u8]) -> Option<u64> {
    // Shifted in a byte at a time, in a register: copying the digits into
    // a stack word took a call to memmove and a store-forwarding stall on
    // the load after it (a third of a replay's parsing).
    let mut v = 0x3030_3030_3030_3030u64;
    for &b in d {
        v = (v >> 8) | (u64::from(b) << 56);
    }
    digits_value(v)
}

/// Eight ASCII digits (the last in the highest byte) as their value, or
/// None if any byte is not a digit.
#[inline(always)]
fn digits_value(v: u64) -> Option<u64> {
    // Every byte in '0'..='9': below '0' borrows into the top bit, above '9' carries into it.
    let below = v.wrapping_sub(0x3030_3030_3030_3030);
    let above = v.wrapping_add(0x4646_4646_4646_4646);
    if (below | above) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    let v = below;
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some((v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_digits_are_their_value() {
        for s in ["", "0", "7", "12", "10027", "99999999", "00000001", "12345678"] {
            let want = if s.is_empty() { 0 } else { s.parse::<u64>().unwrap() };
            assert_eq!(eight_digits(s.as_bytes()), Some(want), "{s}");
        }
        for s in ["1a", "/", ":", "1 2", "-1", "\u{b0}"] {
            assert_eq!(eight_digits(s.as_bytes()), None, "{s}");
        }
    }

    /// The one-load path gives the bits the standard parser gives, for
    /// every short field, whatever bytes follow it in the buffer; and leaves
    /// what it cannot read to `decimal` (and so to the standard parser).
    #[test]
    fn wide_decimals_parse_as_the_standard_parser_does_whatever_follows() {
        let mut fields: Vec<String> = [
            "1.10027",
            "0",
            "1.",
            ".5",
            "149.629",
            "99999999",
            "1234567.",
            ".1234567",
            "0.1",
            "0.3",
            "00012.34",
            ".",
            "1.2.3",
            "1a",
            "",
            "1e5",
            "12345678",
            "1.1234567",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 1 + (seed >> 60) as usize % 8;
            let dot = (seed >> 40) as usize % (len + 2);
            let f: String = (0..len)
                .map(|k| if k == dot { '.' } else { char::from(b'0' + ((seed >> (k * 4)) % 10) as u8) })
                .collect();
            fields.push(f);
        }
        let mut taken = 0;
        for (n, f) in fields.iter().enumerate() {
            for after in [&b",1.2,3\n"[..], b"\n", b"", b"\xff\xfe..", b"  ,"] {
                let mut buf = f.as_bytes().to_vec();
                buf.extend_from_slice(after);
                buf.extend_from_slice(&[b'9'; 8][..(n % 9)]);
                let got = decimal_wide(f.as_bytes(), &buf);
                let want = f.parse::<f64>().ok();
                match got {
                    Some(v) => {
                        taken += 1;
                        assert_eq!(Some(v.to_bits()), want.map(f64::to_bits), "{f:?} then {after:?}")
                    }
                    // Not taken: then `decimal` or the standard parser decides, and must agree.
                    None => {
                        assert_eq!(decimal(f.as_bytes()).or(want).map(f64::to_bits), want.map(f64::to_bits), "{f:?}")
                    }
                }
            }
        }
        // The one-load path is the common one, not a rare branch.
        assert!(taken > fields.len() * 3, "{taken} of {}", fields.len() * 5);
        assert!(decimal_wide(b"1.10027", b"1.10027,1.1").is_some());
    }

    #[test]
    fn decimals_parse_as_the_standard_parser_does() {
        for s in [
            "1.10027",
            "0",
            "-0",
            "+1",
            "1.",
            ".5",
            "-.5",
            "12345678.1234567",
            "99999.99999",
            "0.1",
            "0.3",
            "00012.3400",
        ] {
            let want: f64 = s.parse().unwrap();
            let got = decimal(s.as_bytes()).unwrap_or_else(|| panic!("{s} not taken"));
            assert_eq!(got.to_bits(), want.to_bits(), "{s}");
        }
        // Left to the standard parser.
        for s in [
            "",
            ".",
            "-",
            "123456789012345",
            "1e5",
            "1.2.3",
            "nan",
            "inf",
            "1234567890123456",
            " 1",
            "1,0",
            "0x10",
            // More digits than the quick way can hold exactly.
            "0.000000000000000000001",
            "1.7976931348623157",
        ] {
            assert_eq!(decimal(s.as_bytes()), None, "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn delimiters_are_every_comma_and_line_feed(bytes in proptest::collection::vec(proptest::prop_oneof![
            proptest::prelude::Just(b','), proptest::prelude::Just(b'\n'), proptest::prelude::any::<u8>()
        ], 0..100)) {
            let mut ours = Vec::new();
            delimiters(&bytes, &mut ours);
            let want: Vec<u32> = bytes.iter().enumerate().filter(|(_, b)| **b == b',' || **b == b'\n').map(|(i, _)| i as u32).collect();
            proptest::prop_assert_eq!(ours, want);
        }

        #[test]
        fn any_short_decimal_is_the_standard_parsers(int in 0u64..10_000_000, frac in 0u64..100_000_000, width in 0usize..9, neg: bool) {
            let frac = format!("{frac:0width$}", width = width);
            let frac = &frac[frac.len().saturating_sub(width)..];
            let s = format!("{}{int}.{frac}", if neg { "-" } else { "" });
            let want: f64 = s.parse().unwrap();
            let got = decimal(s.as_bytes());
            proptest::prop_assert!(got.is_some(), "{} not taken", s);
            proptest::prop_assert_eq!(got.map(f64::to_bits), Some(want.to_bits()), "{}", s);
        }
    }
}
