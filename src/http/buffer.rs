//! A reusable read buffer: bytes `[start, end)` are filled and not yet consumed.

use std::io;
use std::os::fd::RawFd;

/// Smallest free space offered to a read.
const MIN_READ: usize = 4096;

/// A growable byte buffer for one connection.
#[derive(Debug, Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// A buffer with `cap` bytes of room.
    #[must_use]
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            data: vec![0; cap],
            start: 0,
            end: 0,
        }
    }

    /// The unconsumed bytes.
    #[must_use]
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Unconsumed byte count.
    #[must_use]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// No unconsumed bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drop `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Append bytes (tests and the chunked path).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len(), usize::MAX);
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Ensure at least `want` free bytes after `end`, without growing the buffer past `max`
    /// total bytes (it may already be larger). Moves the unconsumed bytes to the front first.
    fn make_room(&mut self, want: usize, max: usize) {
        if self.data.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want {
            let new_len = (self.end + want)
                .max(self.data.len() * 2)
                .min(max.max(self.end + want));
            self.data.resize(new_len, 0);
        }
    }

    /// Read once from a nonblocking fd, growing up to `max` bytes in all. `Ok(0)` is end of
    /// stream; `WouldBlock` means nothing is there yet.
    pub fn read_from(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let room = MIN_READ.min(max.saturating_sub(self.len())).max(1);
        self.make_room(room, max);
        let n = crate::sys::fd::read(fd, &mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Free space to read into (at least `want` bytes unless the buffer would exceed `max`);
    /// follow with [`ReadBuf::commit`]. For readers that are not raw fds (async sockets).
    pub fn spare(&mut self, want: usize, max: usize) -> &mut [u8] {
        let room = want.min(max.saturating_sub(self.len())).max(1);
        self.make_room(room, max);
        &mut self.data[self.end..]
    }

    /// Count `n` bytes written into [`ReadBuf::spare`] as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Release memory beyond `keep` bytes when the buffer is empty (after a big request).
    pub fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.data.len() > keep {
            self.data.truncate(keep);
            self.data.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_compact() {
        let mut b = ReadBuf::with_capacity(8);
        b.extend(b"hello");
        b.consume(2);
        assert_eq!(b.filled(), b"llo");
        b.extend(b"world!");
        assert_eq!(b.filled(), b"lloworld!");
        b.consume(100);
        assert!(b.is_empty());
    }
}
