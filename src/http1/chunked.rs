//! The chunked decoder: the framing of a chunked request body (RFC 9112 §7.1) as a
//! state machine over bytes, with no socket. It is fed whatever bytes arrived and
//! copies the chunk data out; sizes, extensions and trailers are checked for shape and
//! dropped.
//!
//! `BodyReader` (`body.rs`) feeds it from a client connection's buffer, or reads a
//! large chunk's data straight from the socket and tells it how much (`skip_data`);
//! `response.rs`'s tests decode the chunked answers they write with it; `ChunkedReader`
//! decodes any reader with it.

use std::io::{self, Read};

use crate::error::ProxyError;

const BAD_CHUNK: ProxyError = ProxyError::BadRequest("bad chunked body");
/// Longest chunk-size line, extensions and CRLF included.
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes accepted (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 8192;

/// Where the chunked decoder stands (RFC 9112 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size: the value so far and how many digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before a `;`.
    SizeSpace {
        value: u64,
    },
    /// Chunk extensions, up to the CR; their content is not interpreted.
    Ext {
        value: u64,
    },
    /// The LF ending a size line.
    SizeLf {
        value: u64,
    },
    /// Chunk data, this many bytes left.
    Data(u64),
    /// The CR, then the LF, after chunk data.
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final empty line.
    LineStart,
    /// Inside a trailer field line, and its LF.
    Trailer,
    TrailerLf,
    /// The LF of the final empty line.
    LastLf,
    Done,
}

/// A strict, allocation-free decoder of chunked framing. It is fed whatever bytes
/// arrived and copies chunk data out; trailers are checked for shape and dropped.
#[derive(Debug)]
pub(super) struct Dechunker {
    state: State,
    /// Bytes of the current size line, or of all trailers.
    line: usize,
}

impl Dechunker {
    pub(super) fn new() -> Dechunker {
        Dechunker {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
        }
    }

    /// The last chunk and the trailers have been consumed.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk (0 when not inside data).
    pub(super) fn data_left(&self) -> u64 {
        if let State::Data(left) = self.state {
            left
        } else {
            0
        }
    }

    /// Records `n <= data_left()` data bytes the caller took from the wire itself.
    pub(super) fn skip_data(&mut self, n: u64) {
        let left = self.data_left();
        debug_assert!(n <= left);
        self.state = if n >= left {
            State::DataCr
        } else {
            State::Data(left - n)
        };
    }

    /// Decodes from `input`, copying chunk data into `out`. Returns (bytes of `input`
    /// used, bytes written to `out`); stops when `input` is used up, `out` is full, or
    /// the body is done (the rest of `input` belongs to the next request).
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), ProxyError> {
        let (mut used, mut written) = (0, 0);
        while used < input.len() {
            if let State::Data(left) = self.state {
                let n = (input.len() - used)
                    .min(out.len() - written)
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    break; // `out` is full
                }
                out[written..written + n].copy_from_slice(&input[used..used + n]);
                (used, written) = (used + n, written + n);
                self.skip_data(n as u64);
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[used])?;
            used += 1;
        }
        Ok((used, written))
    }

    /// Advances over one framing byte.
    fn step(&mut self, b: u8) -> Result<(), ProxyError> {
        use State::*;
        if matches!(
            self.state,
            Size { .. } | SizeSpace { .. } | Ext { .. } | SizeLf { .. }
        ) {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(BAD_CHUNK);
            }
        } else if matches!(self.state, LineStart | Trailer | TrailerLf | LastLf) {
            self.line += 1;
            if self.line > MAX_TRAILERS {
                return Err(BAD_CHUNK);
            }
        }
        self.state = match (self.state, b) {
            (Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err(BAD_CHUNK); // would overflow a u64
                }
                let digit = (b as char).to_digit(16).unwrap_or(0);
                Size {
                    value: value << 4 | u64::from(digit),
                    digits: digits + 1,
                }
            }
            (Size { digits: 0, .. }, _) => return Err(BAD_CHUNK),
            (Size { value, .. } | SizeSpace { value }, b' ' | b'\t') => SizeSpace { value },
            (Size { value, .. } | SizeSpace { value }, b';') => Ext { value },
            (Size { value, .. } | Ext { value }, b'\r') => SizeLf { value },
            (Ext { value }, b'\t' | b' '..=b'~' | 0x80..=0xff) => Ext { value },
            (SizeLf { value: 0 }, b'\n') => {
                self.line = 0;
                LineStart
            }
            (SizeLf { value }, b'\n') => Data(value),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.line = 0;
                Size {
                    value: 0,
                    digits: 0,
                }
            }
            (LineStart, b'\r') => LastLf,
            (LineStart, _) if is_tchar(b) => Trailer,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, b'\t' | b' '..=b'~' | 0x80..=0xff) => Trailer,
            (TrailerLf, b'\n') => LineStart,
            (LastLf, b'\n') => Done,
            _ => return Err(BAD_CHUNK),
        };
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A chunked body read from `inner` and decoded: the answer of a backend that did not
/// switch protocols for an upgrade (`proxy/upgrade.rs`), which comes over a socket of
/// our own rather than through ureq. Trailers are dropped, as everywhere.
pub struct ChunkedReader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Undecoded bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    dechunker: Dechunker,
}

impl<R: Read> ChunkedReader<R> {
    pub fn new(inner: R) -> ChunkedReader<R> {
        ChunkedReader {
            inner,
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            dechunker: Dechunker::new(),
        }
    }
}

impl<R: Read> Read for ChunkedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.dechunker.is_done() || out.is_empty() {
                return Ok(0);
            }
            let pending = &self.buf[self.start..self.end];
            let (used, n) = self
                .dechunker
                .decode(pending, out)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
            self.start += used;
            if n > 0 {
                return Ok(n);
            }
            if used > 0 {
                continue;
            }
            // The decoder needs more than is buffered.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.end == self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk framing line too long",
                ));
            }
            match self.inner.read(&mut self.buf[self.end..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.end += n,
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` in one go with a Dechunker: (decoded, bytes of input used).
    fn dechunk(input: &[u8]) -> Result<(Vec<u8>, usize), ProxyError> {
        let mut d = Dechunker::new();
        let mut out = vec![0; input.len()];
        let (used, n) = d.decode(input, &mut out)?;
        if !d.is_done() {
            return Err(ProxyError::BadRequest("not done"));
        }
        out.truncate(n);
        Ok((out, used))
    }

    fn dechunk_err(input: &str) {
        match dechunk(input.as_bytes()) {
            Err(ProxyError::BadRequest("bad chunked body")) => {}
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn dechunker_accepts_what_the_rfc_allows() {
        assert_eq!(dechunk(b"0\r\n\r\n").unwrap(), (vec![], 5));
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap().0, b"abc");
        assert_eq!(
            dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
            b"0123456789"
        );
        assert_eq!(
            dechunk(b"000000000000000a\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .0,
            b"0123456789"
        );
        assert_eq!(
            dechunk(b"3;a=b;c=\"d e\"\r\nabc\r\n0;x\r\n\r\n").unwrap().0,
            b"abc"
        );
        assert_eq!(dechunk(b"3 ;a\r\nabc\r\n0\r\n\r\n").unwrap().0, b"abc");
        let (data, used) = dechunk(b"1\r\na\r\n0\r\nA: 1\r\nB: 2\r\n\r\nNEXT").unwrap();
        assert_eq!(
            (data.as_slice(), used),
            (&b"a"[..], 23),
            "trailers dropped, next request kept"
        );
    }

    #[test]
    fn dechunker_refuses_what_the_rfc_does_not() {
        for bad in [
            "g\r\n",                   // not hex
            "\r\n",                    // no size
            "+5\r\nhello\r\n",         // sign
            " 5\r\nhello\r\n",         // space before
            "0x5\r\nhello\r\n",        // prefix
            "5 \r\nhello\r\n",         // whitespace not followed by an extension
            "5\nhello\r\n",            // bare LF in the size line
            "5\r\rhello\r\n",          // CR without LF
            "5\r\nhello\n",            // no CR after data
            "5\r\nhelloX\r\n",         // data longer than announced
            "5\r\nhello\r\r",          // no LF after data
            "5;a\x01\r\nhello\r\n",    // control byte in an extension
            "00000000000000001\r\n",   // 17 digits
            "0\r\n\n",                 // bare LF ending the trailers
            "0\r\n: x\r\n\r\n",        // trailer without a name
            "0\r\n x\r\n\r\n",         // obs-fold in the trailers
            "0\r\nA: 1\nB: 2\r\n\r\n", // bare LF in a trailer
            "0\r\n\rX",                // CR without LF at the end
        ] {
            dechunk_err(bad);
        }
        dechunk_err(&format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "e".repeat(MAX_SIZE_LINE)
        ));
        dechunk_err(&format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILERS)));
        // Just inside both bounds.
        let ext = "e".repeat(MAX_SIZE_LINE - "5;\r\n".len());
        assert_eq!(
            dechunk(format!("5;{ext}\r\nhello\r\n0\r\n\r\n").as_bytes())
                .unwrap()
                .0,
            b"hello"
        );
        let value = "v".repeat(MAX_TRAILERS - "0\r\nX: \r\n\r\n".len() + "0\r\n".len());
        assert!(dechunk(format!("0\r\nX: {value}\r\n\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn dechunker_stops_when_out_is_full() {
        let mut d = Dechunker::new();
        let mut out = [0; 2];
        assert_eq!(d.decode(b"5\r\nhello\r\n", &mut out).unwrap(), (5, 2));
        assert_eq!(d.data_left(), 3);
        assert_eq!(d.decode(b"llo\r\n0\r\n\r\n", &mut out).unwrap(), (2, 2));
        assert_eq!(d.decode(b"o\r\n0\r\n\r\n", &mut out).unwrap(), (8, 1));
        assert!(d.is_done());
    }

    /// Encodes `body` as chunks of the given sizes, with optional extensions and trailers.
    pub(in crate::http1) fn encode(
        body: &[u8],
        sizes: &[usize],
        ext: &str,
        trailers: &[(String, String)],
    ) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            wire.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        wire.extend_from_slice(format!("0{ext}\r\n").as_bytes());
        for (name, value) in trailers {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    /// A body, its chunk sizes, the extension put on every size line, and trailers.
    type ChunkedCase = (Vec<u8>, Vec<usize>, String, Vec<(String, String)>);

    pub(in crate::http1) fn chunk_parts() -> impl Strategy<Value = ChunkedCase> {
        (
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::collection::vec(1usize..600, 1..8),
            prop_oneof![
                Just(String::new()),
                "(;[a-z]{1,5}(=[a-z0-9]{1,5})?){1,3}",
                Just(" ; q=\"a b\"".to_string())
            ],
            proptest::collection::vec(("[A-Za-z-]{1,10}", "[ -~]{0,20}"), 0..3),
        )
    }

    proptest! {
        #[test]
        fn dechunker_never_panics(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b';'), any::<u8>()], 0..512),
            out_len in 0usize..64,
            splits in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut d = Dechunker::new();
            let mut out = vec![0; out_len];
            let mut at = 0;
            for step in splits.iter().cycle().take(1000) {
                let end = (at + step).min(input.len());
                match d.decode(&input[at..end], &mut out) {
                    Ok((used, n)) => {
                        prop_assert!(used <= end - at && n <= out.len());
                        at += used;
                    }
                    Err(_) => break,
                }
                if at == input.len() || d.is_done() {
                    break;
                }
            }
        }

        #[test]
        fn dechunker_round_trips(
            (body, sizes, ext, trailers) in chunk_parts(),
            feeds in proptest::collection::vec(1usize..700, 1..8),
            out_len in 1usize..700,
        ) {
            let mut wire = encode(&body, &sizes, &ext, &trailers);
            wire.extend_from_slice(b"NEXT");
            let mut d = Dechunker::new();
            let mut decoded = Vec::new();
            let mut out = vec![0; out_len];
            let mut at = 0;
            let mut feeds = feeds.iter().cycle();
            while !d.is_done() {
                let end = (at + feeds.next().unwrap()).min(wire.len());
                let (used, n) = d.decode(&wire[at..end], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                decoded.extend_from_slice(&out[..n]);
                at += used;
            }
            prop_assert_eq!(&decoded, &body);
            prop_assert_eq!(&wire[at..], b"NEXT");
        }
    }
}
