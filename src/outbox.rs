//! An outbox: where a worker writes an answer to its client without waiting for the
//! client. What the socket takes at once is sent (`send` with `MSG_DONTWAIT`); what it
//! cannot take yet is kept, in order, in a `Spill` (spill.rs), and every later byte goes
//! behind it, after a try at sending the spill's front. `relay.rs` writes each answer
//! through one, framed by `http1::BodyWriter`; once the backend's answer is complete,
//! what is left goes to the waiting room (`WaitingRoom::write_out`), which writes it
//! as the client takes it, while the worker takes its next job.
//!
//! A client that keeps up costs what a plain write costs: one `send` per write, and
//! no spill is made. One answer never keeps more than `MAX_UNSENT` for its client, and a
//! spill that fails (its temporary file cannot be made or written) is given up: in
//! both cases the worker waits for the client, as far as the socket's write timeout
//! (`--client-timeout`) lets it. That is the one way a slow reader still holds a
//! worker: a backend that sends more than that, faster than its client reads.
//!
//! On a TLS connection every write is sealed first (`Wire::seal`), and what follows
//! handles the sealed bytes exactly as a plain answer's: what is kept, and written out
//! later by the waiting room, is already what goes on the wire.

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;

use rustix::net::{SendAncillaryBuffer, SendFlags, send, sendmsg};

use crate::spill::Spill;
use crate::wire::Wire;

/// The most one answer keeps for its client (what nginx keeps by default, its
/// `proxy_max_temp_file_size`). Past it, the worker waits for the client to take some.
pub const MAX_UNSENT: u64 = 1 << 30;

/// How much of a spill's file part is read back for one send.
const REREAD: usize = 64 * 1024;

/// Whether a send may wait for the client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pace {
    /// Never: what the socket does not take now is left for later.
    Now,
    /// As long as the socket's write timeout allows.
    Waiting,
}

/// The writer of one answer to one client (see the module docs).
#[derive(Debug)]
pub struct Outbox<'s> {
    stream: &'s TcpStream,
    wire: &'s mut Wire,
    /// Where a TLS connection's writes are sealed (kept between writes, not shrunk).
    sealed: Vec<u8>,
    /// What the client has not taken yet, in order; made at the first send that the
    /// socket does not take whole.
    unsent: Option<Spill>,
    /// The spill failed: the rest of this answer is written waiting for the client.
    waits: bool,
    /// `MAX_UNSENT`, but in tests.
    limit: u64,
    /// Where the spill's file part is read back (allocated with the first such read).
    reread: Vec<u8>,
}

impl<'s> Outbox<'s> {
    pub fn new(stream: &'s TcpStream, wire: &'s mut Wire) -> Outbox<'s> {
        Outbox {
            stream,
            wire,
            sealed: Vec::new(),
            unsent: None,
            waits: false,
            limit: MAX_UNSENT,
            reread: Vec::new(),
        }
    }

    /// What the client has not taken yet, if anything: the rest of the answer, for the
    /// waiting room to write out.
    pub fn into_unsent(self) -> Option<Spill> {
        self.unsent.filter(|unsent| !unsent.is_empty())
    }

    /// Whether earlier bytes still wait for the client: new ones must go behind them.
    fn behind(&self) -> bool {
        self.unsent
            .as_ref()
            .is_some_and(|unsent| !unsent.is_empty())
    }

    /// Sends what the socket takes of the spill's front, without waiting.
    fn catch_up(&mut self) -> io::Result<()> {
        if let Some(unsent) = &mut self.unsent {
            while send_front(self.stream, unsent, &mut self.reread, Pace::Now)? > 0 {}
        }
        Ok(())
    }

    /// Keeps `bytes` behind what is already kept. Past `MAX_UNSENT`, waits until the
    /// client has taken enough; when the spill fails, sends everything waiting.
    fn keep(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.waits {
            return send_all(self.stream, bytes);
        }
        let unsent = self.unsent.get_or_insert_with(Spill::new);
        while !unsent.is_empty() && unsent.len() + bytes.len() as u64 > self.limit {
            send_front(self.stream, unsent, &mut self.reread, Pace::Waiting)?;
        }
        let Err(err) = unsent.push(bytes) else {
            return Ok(());
        };
        crate::say!("roundhouse: cannot keep an answer for a slow client ({err}); waiting for it");
        self.waits = true;
        write_rest(self.stream, unsent, &mut self.reread)?;
        send_all(self.stream, bytes)
    }
}

/// Every write is taken whole: sent, or kept for the client.
impl Write for Outbox<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.clear();
        let written = if self.wire.seal(bufs, &mut sealed)? {
            self.send_or_keep(&[IoSlice::new(&sealed)])
        } else {
            self.send_or_keep(bufs)
        };
        self.sealed = sealed;
        written.map(|()| total)
    }

    /// Sends what the socket takes of what is kept, without waiting.
    fn flush(&mut self) -> io::Result<()> {
        self.catch_up()
    }
}

impl Outbox<'_> {
    /// Sends wire bytes (sealed already, on a TLS connection) behind what is kept, or
    /// keeps them.
    fn send_or_keep(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        if self.behind() {
            self.catch_up()?;
        }
        let mut sent = if self.behind() || self.waits {
            0
        } else {
            send_now(self.stream, bufs)?
        };
        for buf in bufs {
            let skip = sent.min(buf.len());
            sent -= skip;
            self.keep(&buf[skip..])?;
        }
        Ok(())
    }
}

/// Sends the front of `unsent` with one `send`, and takes what went out off it;
/// `reread` is where the part kept in a file is read back. Returns how many bytes
/// went out: 0 when nothing is left or, at `Pace::Now`, when the socket takes no more
/// for now.
pub fn send_front(
    stream: &TcpStream,
    unsent: &mut Spill,
    reread: &mut Vec<u8>,
    pace: Pace,
) -> io::Result<usize> {
    if unsent.on_disk() && reread.len() < REREAD {
        reread.resize(REREAD, 0);
    }
    let front = unsent.peek(reread)?;
    if front.is_empty() {
        return Ok(0);
    }
    let n = send_once(stream, &[IoSlice::new(front)], pace)?;
    unsent.advance(n);
    Ok(n)
}

/// Sends all of `unsent`, waiting for the client: where the event side cannot.
pub fn write_rest(stream: &TcpStream, unsent: &mut Spill, reread: &mut Vec<u8>) -> io::Result<()> {
    while send_front(stream, unsent, reread, Pace::Waiting)? > 0 {}
    Ok(())
}

/// One send of `bufs` that never waits; how much the socket took.
fn send_now(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    send_once(stream, bufs, Pace::Now)
}

/// Sends all of `bytes`, waiting for the client.
fn send_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = send_once(stream, &[IoSlice::new(bytes)], Pace::Waiting)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// One `send` (or `sendmsg` for several buffers), retried only when interrupted. At
/// `Pace::Now` a full socket is `Ok(0)`; at `Pace::Waiting` it blocks, and the write
/// timeout running out is an error (`WouldBlock`, as for any write).
fn send_once(stream: &TcpStream, bufs: &[IoSlice<'_>], pace: Pace) -> io::Result<usize> {
    // NOSIGNAL: a client that is gone is an error here, not a SIGPIPE.
    let flags = match pace {
        Pace::Now => SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        Pace::Waiting => SendFlags::NOSIGNAL,
    };
    loop {
        let sent = match bufs {
            [one] => send(stream, one, flags),
            _ => sendmsg(stream, bufs, &mut SendAncillaryBuffer::default(), flags),
        };
        match sent {
            Ok(0) if pace == Pace::Waiting => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if pace == Pace::Now => return Ok(0),
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A connected pair whose receiving side (the first) has small buffers, so that
    /// the sending side fills up soon.
    fn pair() -> (TcpStream, TcpStream) {
        use socket2::{Domain, Socket, Type};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        // Before the connect, or the window is already offered.
        client.set_recv_buffer_size(4096).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let client: TcpStream = client.into();
        let (server, _) = listener.accept().unwrap();
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        (client, server)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn a_client_that_keeps_up_gets_everything_and_nothing_is_kept() {
        let (mut client, server) = pair();
        let mut wire = Wire::Plain;
        let mut outbox = Outbox::new(&server, &mut wire);
        outbox.write_all(b"hello ").unwrap();
        let taken = outbox
            .write_vectored(&[IoSlice::new(b"wor"), IoSlice::new(b"ld")])
            .unwrap();
        assert_eq!(taken, 5);
        assert!(outbox.into_unsent().is_none());
        let mut seen = [0; 11];
        client.read_exact(&mut seen).unwrap();
        assert_eq!(&seen, b"hello world");
    }

    #[test]
    fn what_a_slow_client_cannot_take_is_kept_in_order_and_written_out_later() {
        let (mut client, server) = pair();
        let data = pattern(4 << 20);
        let mut wire = Wire::Plain;
        let mut outbox = Outbox::new(&server, &mut wire);
        // Never waits, though nobody reads: the socket takes some, the rest is kept.
        for piece in data.chunks(10_000) {
            outbox.write_all(piece).unwrap();
        }
        let mut unsent = outbox.into_unsent().expect("kept for the client");
        assert!(!unsent.is_empty() && unsent.len() < data.len() as u64);
        let reader = std::thread::spawn(move || {
            let mut seen = vec![0; data.len()];
            client.read_exact(&mut seen).unwrap();
            assert!(seen == data, "the answer came out of order");
        });
        write_rest(&server, &mut unsent, &mut Vec::new()).unwrap();
        assert!(unsent.is_empty());
        reader.join().unwrap();
    }

    #[test]
    fn past_its_limit_an_outbox_waits_for_the_client() {
        let (mut client, server) = pair();
        let data = pattern(1 << 20);
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            let mut seen = vec![0; expected.len()];
            for piece in seen.chunks_mut(4096) {
                client.read_exact(piece).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
            assert!(seen == expected, "the answer came out of order");
        });
        let mut wire = Wire::Plain;
        let mut outbox = Outbox::new(&server, &mut wire);
        outbox.limit = 100_000;
        for piece in data.chunks(16 * 1024) {
            outbox.write_all(piece).unwrap();
            let kept = outbox.unsent.as_ref().map_or(0, Spill::len);
            assert!(kept <= 100_000, "{kept} bytes kept");
        }
        if let Some(mut unsent) = outbox.into_unsent() {
            write_rest(&server, &mut unsent, &mut Vec::new()).unwrap();
        }
        reader.join().unwrap();
    }

    #[test]
    fn a_client_that_is_gone_is_an_error_not_a_signal() {
        let (client, server) = pair();
        drop(client);
        let mut wire = Wire::Plain;
        let mut outbox = Outbox::new(&server, &mut wire);
        let failed = (0..100).any(|_| outbox.write_all(&[0; 1024]).is_err());
        assert!(failed, "writing to a closed peer never failed");
    }
}
