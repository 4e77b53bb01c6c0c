//! A spill buffer: bytes held for a client that is slower than the other side, in memory
//! up to a size and then in an unlinked temporary file, within one memory cap for all
//! of them together. The event side buffers a request body in one before a worker
//! forwards it (`--request-buffering`), and a worker keeps in one what a slow reader
//! cannot take yet of an answer, which the event side then writes out.
//!
//! The memory cap (`--buffer-memory`) is one process-wide count of the bytes every spill
//! holds in memory; a spill that would pass it, or its own `MEMORY_PER_SPILL`, writes
//! to its file from then on. Files cost disk (the page cache), never the heap, so many
//! slow clients cannot grow the process beyond the cap. `tempfile` makes the file
//! (`O_TMPFILE` on Linux: it has no name, and vanishes with its descriptor).

use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most one spill keeps in memory before it moves on to a file: a 1 MiB upload or
/// the rest of a 1 MiB answer stays off the disk (within the `--buffer-memory` cap for
/// all spills together).
pub const MEMORY_PER_SPILL: usize = 1 << 20;

/// Bytes all spills hold in memory now, and the cap on it. Written only by `Spill`
/// (charge on push, release on consume and drop) and by `set_memory_cap` at start.
static IN_MEMORY: AtomicUsize = AtomicUsize::new(0);
static MEMORY_CAP: AtomicUsize = AtomicUsize::new(64 << 20);

/// Sets `--buffer-memory`, once at start.
pub fn set_memory_cap(bytes: usize) {
    // Relaxed: read by every push, which only needs to see it soon after start.
    MEMORY_CAP.store(bytes, Ordering::Relaxed);
}

/// Bytes all spills hold in memory now (a gauge for the admin interface and tests).
pub fn in_memory() -> usize {
    IN_MEMORY.load(Ordering::Relaxed)
}

/// Takes `n` bytes of the memory cap, or none if that would pass it.
fn charge(n: usize) -> bool {
    // Relaxed: a count; the compare-and-swap keeps the sum under the cap.
    let cap = MEMORY_CAP.load(Ordering::Relaxed);
    IN_MEMORY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(n).filter(|&sum| sum <= cap)
        })
        .is_ok()
}

fn release(n: usize) {
    if n > 0 {
        IN_MEMORY.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Bytes held in order: first `memory[read..]`, then the file from `file_read` to
/// `file_len`. Pushed at the end, read from the front.
#[derive(Debug, Default)]
pub struct Spill {
    memory: Vec<u8>,
    /// How much of `memory` was read (and, when consumed, may be dropped).
    read: usize,
    /// Bytes of `memory` counted against the cap: its capacity, what is allocated
    /// whether used or not, so that the cap bounds the heap and not only the bytes held.
    charged: usize,
    file: Option<File>,
    file_len: u64,
    file_read: u64,
}

impl Spill {
    pub fn new() -> Spill {
        Spill::default()
    }

    /// Bytes held and not yet read.
    pub fn len(&self) -> u64 {
        (self.memory.len() - self.read) as u64 + (self.file_len - self.file_read)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any of it went to a file.
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Adds `bytes` at the end: to memory while this spill and the process stay under
    /// their caps, to the file after that (and for good, to keep the order).
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.room_for(bytes.len()) {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        self.append_to_file(bytes)
    }

    /// Makes room in memory for a body of `total` bytes at once (as far as
    /// `MEMORY_PER_SPILL` goes), so that it is not copied again as it grows. Counted
    /// against the cap from now on, though it is only address space until bytes arrive.
    pub fn expect(&mut self, total: u64) {
        let room = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(MEMORY_PER_SPILL);
        if self.file.is_none() && room > self.memory.capacity() {
            self.grow_to(room);
        }
    }

    /// Receives up to `want` bytes with `recv` (a read that never waits: Ok(0) at end
    /// of stream, `WouldBlock` when nothing is there yet), straight into memory when
    /// this spill and the process have room for them (no copy on the way), or else
    /// through a buffer of its own into the file. `recv` returns how many bytes at the
    /// front of what it is given it initialized. Returns what `recv` returns.
    pub fn recv_with(
        &mut self,
        want: usize,
        mut recv: impl FnMut(&mut [MaybeUninit<u8>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        const STEP: usize = 64 * 1024;
        let room = want.min(MEMORY_PER_SPILL.saturating_sub(self.memory.len()));
        if room > 0 && self.room_for(room.min(STEP)) {
            let len = self.memory.len();
            let room = room.min(self.memory.capacity() - len);
            let n = recv(&mut self.memory.spare_capacity_mut()[..room])?;
            // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
            unsafe { self.memory.set_len(len + n.min(room)) };
            return Ok(n);
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let want = want.min(scratch.len());
        let n = recv(&mut scratch[..want])?.min(want);
        // SAFETY: `recv` initialized the first `n` bytes of `scratch`.
        let got = unsafe { &*(&scratch[..n] as *const [MaybeUninit<u8>] as *const [u8]) };
        self.push(got)?;
        Ok(n)
    }

    /// Makes room in memory for `n` more bytes; false when this spill or the process
    /// has none, and the bytes go to the file. A fully read memory part is emptied
    /// first; growth doubles the memory (few copies) up to this spill's limit.
    fn room_for(&mut self, n: usize) -> bool {
        if self.file.is_some() {
            return false;
        }
        if self.read == self.memory.len() && self.read > 0 {
            self.memory.clear();
            self.read = 0;
        }
        let need = self.memory.len() + n;
        if need > MEMORY_PER_SPILL {
            return false;
        }
        need <= self.memory.capacity()
            || self.grow_to(need.max(2 * self.memory.capacity()).min(MEMORY_PER_SPILL))
    }

    /// Grows the memory to hold `target` bytes if the cap has room for the growth.
    fn grow_to(&mut self, target: usize) -> bool {
        let growth = target.saturating_sub(self.memory.capacity());
        if !charge(growth) {
            return false;
        }
        self.memory
            .reserve_exact(target.saturating_sub(self.memory.len()));
        // The allocator may give more than asked: that counts too.
        let extra = self.memory.capacity() - (self.charged + growth);
        IN_MEMORY.fetch_add(extra, Ordering::Relaxed);
        self.charged = self.memory.capacity();
        true
    }

    /// Appends to the file, which from now on holds everything pushed.
    fn append_to_file(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile()?);
        }
        let file = self.file.as_ref().expect("a file, made above");
        file.write_all_at(bytes, self.file_len)?;
        self.file_len += bytes.len() as u64;
        Ok(())
    }

    /// The next bytes to read, without taking them: a slice of memory, or what one read
    /// of the file brings into `scratch`. Empty when nothing is left.
    pub fn peek<'a>(&'a self, scratch: &'a mut [u8]) -> io::Result<&'a [u8]> {
        if self.read < self.memory.len() {
            return Ok(&self.memory[self.read..]);
        }
        let (Some(file), true) = (&self.file, self.file_read < self.file_len) else {
            return Ok(&[]);
        };
        let want = scratch.len().min((self.file_len - self.file_read) as usize);
        let n = file.read_at(&mut scratch[..want], self.file_read)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(&scratch[..n])
    }

    /// Marks the next `n` bytes read (after a `peek` showed them).
    pub fn advance(&mut self, n: usize) {
        let in_memory = n.min(self.memory.len() - self.read);
        self.read += in_memory;
        self.file_read += (n - in_memory) as u64;
        debug_assert!(self.file_read <= self.file_len, "advanced past the end");
    }

    /// Reads it again from the start (a request body sent once more, to another
    /// backend). Only for a spill whose bytes were never dropped: one that was read
    /// through `Read` or `advance` and not pushed to since.
    pub fn rewind(&mut self) {
        self.read = 0;
        self.file_read = 0;
    }
}

/// Reading takes bytes from the front, so a request body can be sent from a spill.
impl Read for Spill {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.read < self.memory.len() {
            let n = out.len().min(self.memory.len() - self.read);
            out[..n].copy_from_slice(&self.memory[self.read..self.read + n]);
            self.read += n;
            return Ok(n);
        }
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let want = out.len().min((self.file_len - self.file_read) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = file.read_at(&mut out[..want], self.file_read)?;
        self.file_read += n as u64;
        Ok(n)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        release(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spill: &mut Spill) -> Vec<u8> {
        let mut out = Vec::new();
        spill.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn small_pushes_stay_in_memory_and_come_back_in_order() {
        let mut s = Spill::new();
        s.push(b"hello ").unwrap();
        s.push(b"world").unwrap();
        assert!(!s.on_disk());
        assert_eq!(s.len(), 11);
        assert_eq!(drain(&mut s), b"hello world");
        assert!(s.is_empty());
        s.rewind();
        assert_eq!(drain(&mut s), b"hello world");
    }

    #[test]
    fn past_its_own_size_a_spill_goes_on_in_a_file_keeping_the_order() {
        let mut s = Spill::new();
        let big: Vec<u8> = (0..MEMORY_PER_SPILL + 1000).map(|i| i as u8).collect();
        s.push(&big[..100]).unwrap();
        s.push(&big[100..]).unwrap();
        assert!(s.on_disk());
        assert_eq!(s.len(), big.len() as u64);
        assert_eq!(drain(&mut s), big);
        s.rewind();
        // Peek and advance see the same bytes as reading does.
        let mut seen = Vec::new();
        let mut scratch = [0u8; 4096];
        loop {
            let n = {
                let next = s.peek(&mut scratch).unwrap();
                seen.extend_from_slice(next);
                next.len()
            };
            if n == 0 {
                break;
            }
            s.advance(n);
        }
        assert_eq!(seen, big);
    }

    #[test]
    fn the_memory_it_holds_is_counted_and_given_back() {
        let before = in_memory();
        let mut s = Spill::new();
        s.push(&[7; 1000]).unwrap();
        assert!(in_memory() >= before + 1000);
        let mut scratch = [0u8; 16];
        let n = s.peek(&mut scratch).unwrap().len();
        s.advance(n);
        // Consumed memory is dropped at the next push, and all of it with the spill.
        s.push(b"x").unwrap();
        drop(s);
        assert!(in_memory() <= before + 1000, "memory not given back");
    }
}
