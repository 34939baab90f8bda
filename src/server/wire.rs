//! The server's frames as bytes (RFC 6455 §5.2): final, unmasked, as a
//! server sends them. An event is framed once for all its clients. Public for
//! the fan-out bench, whose bare writer sends the same bytes.

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

// Close codes (RFC 6455 §7.4.1).
pub const AWAY: u16 = 1001;
pub const POLICY: u16 = 1008;
pub const SIZE: u16 = 1009;
pub const AGAIN: u16 = 1013;

/// Appends one frame to `out`.
pub fn put(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n => match u16::try_from(n) {
            Ok(n) => {
                out.push(126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        },
    }
    out.extend_from_slice(payload);
}

/// A close frame. A control frame carries at most 125 bytes: the code
/// and 123 of the reason, cut at a character boundary.
pub fn close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    put(out, CLOSE, &payload);
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// Our frames against tungstenite's own encoder, across the three
    /// length encodings and their edges.
    #[test]
    fn frames_are_encoded_as_tungstenite_encodes_them() {
        for len in [0usize, 1, 125, 126, 127, 300, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut ours = Vec::new();
            super::put(&mut ours, super::TEXT, &payload);
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Text), true).format(&mut theirs).expect("format");
            assert_eq!(ours, theirs, "a {len}-byte text frame");
        }
    }

    #[test]
    fn a_close_reason_is_cut_to_fit_a_control_frame_at_a_character_boundary() {
        // 'é' is two bytes: 61 of them are 122 bytes, the 62nd would end at 124.
        let reason = "é".repeat(80);
        let mut out = Vec::new();
        super::close(&mut out, super::AGAIN, &reason);
        assert_eq!(out[0], 0x88, "a final close frame");
        let len = usize::from(out[1]);
        assert!(len <= 125, "control frames carry at most 125 bytes, got {len}");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1013);
        let text = std::str::from_utf8(&out[4..]).expect("the reason stays UTF-8");
        assert_eq!(text, "é".repeat(61));
        assert_eq!(out.len(), 2 + len);
    }
}
