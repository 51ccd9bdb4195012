//! Anonymous shared memory, created by the master before the first fork and inherited by every
//! worker at the same address.

use std::io;
use std::ptr::NonNull;

/// A shared, zero-initialised array of `T`. `T` must be made of atomics (or other types that are
/// sound to share between processes).
pub struct SharedArray<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: the mapping holds only atomics (by the constructor's contract) and lives until drop.
unsafe impl<T: Sync> Sync for SharedArray<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Send for SharedArray<T> {}

impl<T: Default + Sync> SharedArray<T> {
    /// Map `len` zeroed elements shared with future children.
    pub fn new(len: usize) -> io::Result<Self> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len.max(1))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "shared array too large"))?;
        // SAFETY: an anonymous shared mapping; the kernel zero-fills it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// The elements. All-zero bytes must be a valid `T` (true for atomics).
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the mapping holds `len` zero-initialised T (all-zero atomics are valid) and is
        // mapped as long as self lives; T is shared only through & and atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}
