//! Shared memory for the scoreboard: one memfd, created by the master before the first fork,
//! mapped shared, inherited by every child at the same address and — because it is a file, not
//! an anonymous mapping — handed over across the master's re-exec on reload, so that a new
//! master image, the router and the previous image's workers all read one scoreboard.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// A type that may live in shared memory and be viewed through `&`.
///
/// # Safety
/// The all-zero bit pattern must be a valid value of the type (a fresh mapping is zero-filled and
/// is never initialised otherwise), and every field must be safe to read and write concurrently
/// from several processes through a shared reference: atomics, or arrays and structs of them. No
/// pointers, no `Drop`, no interior `UnsafeCell` other than the atomics'.
pub unsafe trait Shareable: Sync {}

/// A shared mapping of one memfd.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping lives until drop, and is only handed out as `&[T]` for `T: Shareable`,
// whose values are safe to share across threads (and processes).
unsafe impl Sync for Region {}
// SAFETY: as above; the pointer is not tied to the creating thread.
unsafe impl Send for Region {}

impl Region {
    /// Create a zero-filled region of `len` bytes (close-on-exec until handed over).
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a memfd name"))?;
        // SAFETY: a valid NUL-terminated name; the returned fd (if any) is ours alone.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len.max(1))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd, len.max(1))
    }

    /// Map a region handed over by a previous image (by fd number); its size is the file's.
    ///
    /// # Safety
    /// `raw` must be an open fd this process owns and nothing else will close: the region takes
    /// ownership of it.
    pub unsafe fn adopt(raw: RawFd) -> io::Result<Self> {
        // SAFETY: the caller hands us ownership of an open fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fstat fills the zeroed struct for an open fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = usize::try_from(st.st_size)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty shared region"))?;
        // Keep it from leaking into later execs of other programs.
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Self::map(fd, len)
    }

    /// A second mapping of the same memory through a duplicate of its fd (as a re-exec'd
    /// image maps the region it was handed).
    pub fn duplicate(&self) -> io::Result<Self> {
        let fd = self.fd.try_clone()?;
        Self::map(fd, self.len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a shared mapping of a file we hold open, `len` bytes long; the kernel picks the
        // address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len, fd })
    }

    /// Bytes mapped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (a region has at least one byte); here for clippy's `len_without_is_empty`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, to hand over across exec.
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `count` values of `T` starting `offset` bytes in. `None` when they do not fit or the
    /// offset is not aligned for `T`.
    #[must_use]
    pub fn slice<T: Shareable>(&self, offset: usize, count: usize) -> Option<&[T]> {
        let bytes = std::mem::size_of::<T>().checked_mul(count)?;
        if offset.checked_add(bytes)? > self.len
            || !(self.ptr.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>())
        {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); the mapping is zero-filled or holds
        // values written through atomics, and T: Shareable makes every such bit pattern valid
        // and sharing through & sound. The slice borrows self, so the mapping outlives it.
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<T>(), count)
        })
    }
}

// SAFETY: atomics only (pid, counters, flags); zero means a free slot.
unsafe impl Shareable for crate::scoreboard::Slot {}
// SAFETY: atomics only (start time, length, request bytes); zero means idle.
unsafe impl Shareable for crate::scoreboard::Core {}
// SAFETY: atomics only; a zero magic means "not laid out".
unsafe impl Shareable for crate::scoreboard::Header {}
// SAFETY: atomics only (counters and a histogram of atomics); all-zero is "no router yet".
unsafe impl Shareable for crate::scoreboard::Queue {}

// SAFETY: atomics only (pid, counters, flags); zero means "not started yet".
unsafe impl Shareable for crate::offload::spooler::SpoolerSlot {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; no reference into it outlives self.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[repr(C, align(64))]
    struct Cell64(AtomicU64);
    // SAFETY: an atomic; zero is a valid AtomicU64.
    unsafe impl Shareable for Cell64 {}

    #[test]
    fn slices_are_checked() {
        let r = Region::create("headrace-test", 256).unwrap();
        let s = r.slice::<Cell64>(0, 4).unwrap();
        s[3].0.store(7, Ordering::Relaxed);
        assert_eq!(
            r.slice::<Cell64>(192, 1).unwrap()[0]
                .0
                .load(Ordering::Relaxed),
            7
        );
        assert!(r.slice::<Cell64>(0, 5).is_none(), "past the end");
        assert!(r.slice::<Cell64>(8, 1).is_none(), "misaligned");
    }

    #[test]
    fn adopted_fd_sees_the_same_memory() {
        let r = Region::create("headrace-test", 128).unwrap();
        r.slice::<Cell64>(64, 1).unwrap()[0]
            .0
            .store(42, Ordering::Relaxed);
        // SAFETY: a fresh duplicate that only the adopted region owns.
        let dup = unsafe { libc::dup(r.raw_fd()) };
        assert!(dup >= 0);
        // SAFETY: `dup` is ours and handed to the region.
        let again = unsafe { Region::adopt(dup) }.unwrap();
        assert_eq!(again.len(), 128);
        assert_eq!(
            again.slice::<Cell64>(64, 1).unwrap()[0]
                .0
                .load(Ordering::Relaxed),
            42
        );
    }
}
