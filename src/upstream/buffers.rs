//! The input and output buffers of one backend connection, lent by the worker that uses
//! the connection and given back while it idles in its pool.
//!
//! ureq reads a backend's answer into the connection's input buffer and writes the
//! request from its output buffer, a buffer-full per syscall. Its own buffers stay
//! with the connection for as long as it lives, pooled or not, so their size is paid
//! once per pooled connection: about twice the workers. These are paid once per
//! worker: when ureq hands a connection back to its pool (`Transport::is_open` just
//! after an answer, upstream/transport.rs), its buffers go to the calling thread's
//! spare set, and the next connection that thread uses takes them from there. That
//! makes a 64 KiB input buffer affordable (a 1 MiB answer in 16 reads instead of 64),
//! and a burst of idle pooled connections costs no buffer memory. ureq's `LazyBuffers`
//! cannot give its memory back, hence this small implementation of its `Buffers`
//! contract, written here.

use std::cell::RefCell;

use ureq::unversioned::transport::Buffers;

/// Bytes of input read per syscall, at most: the input buffer grows to this from
/// `FIRST_INPUT` once a read fills it (an answer streaming in), and keeps that size.
pub const INPUT: usize = 64 * 1024;

/// The input buffer a thread's first set starts with: a small answer never needs more,
/// and an idle balancer keeps its memory.
const FIRST_INPUT: usize = 16 * 1024;

/// The least room `tmp_and_output` leaves for a piece of request body (ureq reads the
/// body into it before it frames it into the output buffer).
const MIN_TMP: usize = 10 * 1024;

thread_local! {
    /// This thread's spare set, from the last connection it handed back.
    static SPARE: RefCell<Option<(Vec<u8>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// A connection's buffers: none while it idles, a set while it is used.
#[derive(Debug)]
pub struct LentBuffers {
    output_size: usize,
    /// Empty (no capacity) until first used, and again once given back.
    input: Vec<u8>,
    output: Vec<u8>,
    /// `input[start..end]` is read and not yet consumed.
    start: usize,
    end: usize,
    /// The last `input_consume` took something: what is left may be parsed as it is.
    progress: bool,
    /// The last read filled all the room it had: more is on its way.
    filled: bool,
}

impl LentBuffers {
    /// Buffers for a new connection; `output_size` must hold the largest request head.
    pub fn new(output_size: usize) -> LentBuffers {
        LentBuffers {
            output_size,
            input: Vec::new(),
            output: Vec::new(),
            start: 0,
            end: 0,
            progress: false,
            filled: false,
        }
    }

    /// Gives the buffers to this thread's spare set, if nothing read is left in them
    /// (ureq checks that before it pools a connection) and the thread has none yet.
    pub fn give_back(&mut self) {
        if self.start != self.end || self.input.is_empty() {
            return;
        }
        let set = (
            std::mem::take(&mut self.input),
            std::mem::take(&mut self.output),
        );
        (self.start, self.end, self.progress, self.filled) = (0, 0, false, false);
        SPARE.with_borrow_mut(|spare| {
            if spare.is_none() {
                *spare = Some(set);
            }
        });
    }

    /// Takes a set (the thread's spare one, or a new one) if it has none.
    fn ensure(&mut self) {
        if !self.input.is_empty() {
            return;
        }
        let spare = SPARE.with_borrow_mut(Option::take);
        let (input, mut output) = spare.unwrap_or_else(|| (vec![0; FIRST_INPUT], Vec::new()));
        // Sets made for another size of request head (a reload) are resized.
        output.resize(self.output_size, 0);
        (self.input, self.output) = (input, output);
    }

    /// Moves what is unconsumed to the front when less than `room` is free after it.
    fn make_room(&mut self, room: usize) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.input.len() - self.end < room && self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }
}

impl Buffers for LentBuffers {
    fn output(&mut self) -> &mut [u8] {
        self.ensure();
        &mut self.output
    }

    fn input(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.ensure();
        // An answer streams in: larger reads from now on.
        if std::mem::take(&mut self.filled) && self.input.len() < INPUT {
            self.input.resize(INPUT, 0);
        }
        // Reads of a quarter of the buffer at least, while the rest can move. A head
        // larger than the buffer cannot be read whole: ureq refuses it.
        self.make_room(self.input.len() / 4);
        &mut self.input[self.end..]
    }

    fn input_appended(&mut self, amount: usize) {
        self.end = (self.end + amount).min(self.input.len());
        self.filled = self.end == self.input.len();
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.start = (self.start + amount).min(self.end);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        self.ensure();
        self.make_room(MIN_TMP);
        // Only if the backend sent that much before the body went out (after a
        // `100 Continue`, say): rare enough to grow for.
        if self.input.len() - self.end < MIN_TMP {
            self.input.resize(self.end + MIN_TMP, 0);
        }
        (&mut self.input[self.end..], &mut self.output)
    }

    fn can_use_input(&self) -> bool {
        self.start < self.end && self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(b: &mut LentBuffers, bytes: &[u8]) {
        let free = b.input_append_buf();
        free[..bytes.len()].copy_from_slice(bytes);
        b.input_appended(bytes.len());
    }

    #[test]
    fn input_is_read_consumed_and_kept_in_order() {
        let mut b = LentBuffers::new(100);
        assert!(b.input().is_empty() && !b.can_use_input());
        read(&mut b, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(b.input(), b"HTTP/1.1 200 OK\r\n");
        // Nothing consumed yet: more must be read before parsing again.
        assert!(!b.can_use_input());
        b.input_consume(9);
        assert_eq!(b.input(), b"200 OK\r\n");
        assert!(b.can_use_input());
        read(&mut b, b"more");
        assert_eq!(b.input(), b"200 OK\r\nmore");
        b.input_consume(12);
        assert!(b.input().is_empty() && !b.can_use_input());
        assert_eq!(b.output().len(), 100);
    }

    #[test]
    fn a_read_that_fills_the_input_grows_it_once() {
        let mut b = LentBuffers::new(100);
        assert_eq!(b.input_append_buf().len(), FIRST_INPUT);
        read(&mut b, &[1; 100]);
        b.input_consume(100);
        // A small answer: no growth.
        assert_eq!(b.input_append_buf().len(), FIRST_INPUT);
        read(&mut b, &vec![2; FIRST_INPUT]);
        b.input_consume(FIRST_INPUT);
        assert_eq!(b.input_append_buf().len(), INPUT);
        read(&mut b, &vec![3; INPUT]);
        b.input_consume(INPUT);
        assert_eq!(b.input_append_buf().len(), INPUT);
    }

    #[test]
    fn a_nearly_full_input_moves_its_rest_to_the_front() {
        let mut b = LentBuffers::new(100);
        let chunk = vec![7u8; FIRST_INPUT - 3];
        read(&mut b, &chunk);
        b.input_consume(FIRST_INPUT - 5);
        // 2 unconsumed bytes at the end: an append moves them to the front first.
        assert!(b.input_append_buf().len() >= FIRST_INPUT - 2);
        assert_eq!(b.input(), [7, 7]);
        let (tmp, out) = b.tmp_and_output();
        assert!(tmp.len() >= MIN_TMP && out.len() == 100);
    }

    #[test]
    fn buffers_go_to_the_thread_and_come_back_to_the_next_connection() {
        let mut first = LentBuffers::new(100);
        read(&mut first, b"answer");
        // Something unconsumed: not given back (ureq would not pool it either).
        first.give_back();
        assert!(!first.input.is_empty());
        first.input_consume(6);
        let address = first.input.as_ptr();
        first.give_back();
        assert!(first.input.is_empty() && first.output.is_empty());
        // The next connection on this thread gets the same memory, not a new set.
        let mut second = LentBuffers::new(200);
        assert_eq!(second.output().len(), 200);
        assert_eq!(second.input.as_ptr(), address);
        // The first connection, used again, makes a set of its own.
        read(&mut first, b"again");
        assert_eq!(first.input(), b"again");
        assert_ne!(first.input.as_ptr(), address);
    }
}
