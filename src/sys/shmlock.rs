//! Shared memory guarded by process-shared, robust mutexes: the caches (`--cache2`), shared
//! areas (`--sharedarea`) and user locks (`--locks`) of `crate::offload::cache`.
//!
//! A [`LockedMap`] is one shared mapping (a memfd, or a file for a cache's `store=`) that starts
//! with `locks` slots of [`LOCK_SLOT`] bytes, each holding a `pthread_mutex_t` made
//! `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`, followed by the data. The mapping is made
//! by the master before it forks, so every child sees the same memory and the same mutexes.
//!
//! Why robust: a worker killed (harakiri, kill -9, OOM) while it holds a lock would otherwise
//! leave every other process blocked forever. The kernel marks a robust mutex whose owner died,
//! the next locker gets `EOWNERDEAD`, makes it consistent and is told ([`Locked::recovered`]) so
//! that it can check the data the dead process may have left half-written.
//!
//! The mutexes are also `PTHREAD_MUTEX_ERRORCHECK`: a thread locking a mutex it already holds
//! gets an error instead of deadlocking, and only the holder may unlock. This is what makes
//! [`LockedMap::lock_data`] sound: the data is only reachable through the guard of lock 0,
//! which no second thread (of any process) can hold at the same time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

/// Bytes reserved per mutex at the start of a map (a `pthread_mutex_t` is 40 bytes on x86-64
/// and 48 on aarch64; a cache line each keeps them apart).
pub const LOCK_SLOT: usize = 64;

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= LOCK_SLOT);

/// A shared mapping whose first `locks` slots are robust process-shared mutexes.
pub struct LockedMap {
    ptr: NonNull<u8>,
    len: usize,
    locks: usize,
    _fd: OwnedFd,
}

// SAFETY: the mapping lives until drop; its data is only reachable through the guard of
// mutex 0 (exclusive across threads and processes), and the mutexes are process-shared
// pthread mutexes, made to be used from any thread.
unsafe impl Sync for LockedMap {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for LockedMap {}

/// What opening a file-backed map found.
pub struct Opened {
    /// The map.
    pub map: LockedMap,
    /// The file did not exist (or was empty): its data is zero-filled.
    pub fresh: bool,
}

impl LockedMap {
    /// A zero-filled anonymous map (a memfd) with `locks` mutexes, initialised, and
    /// `data_len` bytes of data.
    pub fn create(name: &str, locks: usize, data_len: usize) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a memfd name"))?;
        // SAFETY: a valid NUL-terminated name; the returned fd (if any) is ours alone.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut map = Self::map(fd, locks, data_len, true)?;
        map.init_locks()?;
        Ok(map)
    }

    /// Map `path` (created when missing) as `locks` mutexes and `data_len` bytes of data, so
    /// that every change is in the file at once (uWSGI's cache `store=`). A file of another
    /// size is refused (`InvalidData`). The mutexes are left as found: call
    /// [`LockedMap::init_locks`] unless processes of a previous image still use them.
    pub fn open_file(path: &Path, locks: usize, data_len: usize) -> io::Result<Opened> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let want = total_len(locks, data_len)?;
        let have = file.metadata()?.len();
        let fresh = have == 0;
        if !fresh && have != want as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is {have} bytes, this cache needs {want}"),
            ));
        }
        let map = Self::map(OwnedFd::from(file), locks, data_len, fresh)?;
        Ok(Opened { map, fresh })
    }

    fn map(fd: OwnedFd, locks: usize, data_len: usize, resize: bool) -> io::Result<Self> {
        let len = total_len(locks, data_len)?;
        if resize {
            let size = libc::off_t::try_from(len)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "map too large"))?;
            // SAFETY: plain syscall on an fd we own.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: a shared mapping of a file we hold open, `len` bytes long (its size, set or
        // checked above); the kernel picks the address.
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
        Ok(Self {
            ptr,
            len,
            locks,
            _fd: fd,
        })
    }

    /// (Re)initialise every mutex, unlocked. `&mut self`: no thread of this process can be
    /// using them; the caller promises no other process does either (the master calls it
    /// before it forks, on a map no previous server image still uses).
    pub fn init_locks(&mut self) -> io::Result<()> {
        for i in 0..self.locks {
            let m = self.mutex(i);
            // SAFETY: a zeroed attribute object is initialised by pthread_mutexattr_init before
            // any other use, and destroyed after; `m` points into our mapping, inside lock slot
            // i, suitably aligned (page-aligned base, 64-byte slots), and no one uses it now.
            let rc = unsafe {
                let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
                let mut rc = libc::pthread_mutexattr_init(&raw mut attr);
                if rc == 0 {
                    rc = libc::pthread_mutexattr_setpshared(
                        &raw mut attr,
                        libc::PTHREAD_PROCESS_SHARED,
                    );
                }
                if rc == 0 {
                    rc = libc::pthread_mutexattr_setrobust(
                        &raw mut attr,
                        libc::PTHREAD_MUTEX_ROBUST,
                    );
                }
                if rc == 0 {
                    rc = libc::pthread_mutexattr_settype(
                        &raw mut attr,
                        libc::PTHREAD_MUTEX_ERRORCHECK,
                    );
                }
                if rc == 0 {
                    std::ptr::write_bytes(m.cast::<u8>(), 0, LOCK_SLOT);
                    rc = libc::pthread_mutex_init(m, &raw const attr);
                }
                libc::pthread_mutexattr_destroy(&raw mut attr);
                rc
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
        }
        Ok(())
    }

    /// The data, before the map is shared: `&mut self` excludes this process's threads, and
    /// the caller promises no other process uses it yet (the master, before it forks, reading
    /// a store file's header to learn whether a previous image still uses it).
    pub fn data_before_sharing(&mut self) -> &mut [u8] {
        // SAFETY: in bounds; exclusive within this process by `&mut self`, and across
        // processes by the caller's promise.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.locks * LOCK_SLOT),
                self.data_len(),
            )
        }
    }

    fn mutex(&self, i: usize) -> *mut libc::pthread_mutex_t {
        assert!(i < self.locks, "lock {i} of {}", self.locks);
        // SAFETY: slot i is inside the mapping (total_len reserves `locks` slots first).
        unsafe { self.ptr.as_ptr().add(i * LOCK_SLOT).cast() }
    }

    /// Number of mutexes.
    #[must_use]
    pub fn locks(&self) -> usize {
        self.locks
    }

    /// Bytes of data.
    #[must_use]
    pub fn data_len(&self) -> usize {
        self.len - self.locks * LOCK_SLOT
    }

    /// Block until this thread holds mutex `i`. `Ok(true)`: its previous holder died holding it
    /// (the data it guards may be half-written). Errors: `EDEADLK` when this thread holds it
    /// already. The caller must release the GIL around it.
    pub fn lock_raw(&self, i: usize) -> io::Result<bool> {
        // SAFETY: an initialised process-shared mutex in our mapping.
        match unsafe { libc::pthread_mutex_lock(self.mutex(i)) } {
            0 => Ok(false),
            libc::EOWNERDEAD => {
                // SAFETY: we hold it now (EOWNERDEAD means acquired); mark it usable again.
                unsafe { libc::pthread_mutex_consistent(self.mutex(i)) };
                Ok(true)
            }
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    /// Take mutex `i` if it is free: `Ok(None)` when another thread holds it (or this one).
    pub fn try_lock_raw(&self, i: usize) -> io::Result<Option<bool>> {
        // SAFETY: an initialised process-shared mutex in our mapping.
        match unsafe { libc::pthread_mutex_trylock(self.mutex(i)) } {
            0 => Ok(Some(false)),
            libc::EOWNERDEAD => {
                // SAFETY: acquired with a dead previous owner; mark it usable again.
                unsafe { libc::pthread_mutex_consistent(self.mutex(i)) };
                Ok(Some(true))
            }
            libc::EBUSY => Ok(None),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    /// Release mutex `i`. Errors: `EPERM` when this thread does not hold it.
    pub fn unlock_raw(&self, i: usize) -> io::Result<()> {
        // SAFETY: an initialised error-checking mutex: unlocking one we do not hold fails
        // cleanly with EPERM.
        match unsafe { libc::pthread_mutex_unlock(self.mutex(i)) } {
            0 => Ok(()),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    /// Lock mutex 0 and reach the data it guards. The caller must release the GIL around it.
    pub fn lock_data(&self) -> io::Result<Locked<'_>> {
        let recovered = self.lock_raw(0)?;
        Ok(Locked {
            map: self,
            recovered,
        })
    }

    /// Ask the kernel to write the map's dirty pages to its file (`MS_ASYNC`: queued, as
    /// uWSGI's `store_sync`; `MS_SYNC` waits).
    pub fn flush(&self, wait: bool) -> io::Result<()> {
        let flags = if wait { libc::MS_SYNC } else { libc::MS_ASYNC };
        // SAFETY: the whole mapping, page-aligned at its base.
        if unsafe { libc::msync(self.ptr.as_ptr().cast(), self.len, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A Python `memoryview` over the data, writable, with no lock (uWSGI's
    /// `sharedarea_memoryview`: the app synchronises, as there).
    pub fn memoryview<'py>(
        &'static self,
        py: pyo3::Python<'py>,
    ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
        let len = pyo3::ffi::Py_ssize_t::try_from(self.data_len())
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("shared area too large"))?;
        // SAFETY: the data lives as long as the process (`&'static self`); a memoryview over
        // plain bytes of shared memory has no invariant beyond its bounds, which it checks.
        unsafe {
            let p = pyo3::ffi::PyMemoryView_FromMemory(
                self.ptr.as_ptr().add(self.locks * LOCK_SLOT).cast(),
                len,
                pyo3::ffi::PyBUF_WRITE,
            );
            pyo3::Bound::from_owned_ptr_or_err(py, p)
        }
    }
}

fn total_len(locks: usize, data_len: usize) -> io::Result<usize> {
    locks
        .checked_mul(LOCK_SLOT)
        .and_then(|n| n.checked_add(data_len))
        .map(|n| n.max(1))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "map too large"))
}

impl Drop for LockedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; guards borrow self, so none outlives it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Mutex 0 held, with its data.
pub struct Locked<'a> {
    map: &'a LockedMap,
    recovered: bool,
}

impl Locked<'_> {
    /// The previous holder died holding the lock: the data may be half-written.
    #[must_use]
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The data, for this guard's life.
    pub fn data(&mut self) -> &mut [u8] {
        let m = self.map;
        // SAFETY: in bounds (the data follows the lock slots to the end of the mapping). No
        // other reference to these bytes exists: every process and thread reaches them only
        // through a guard of mutex 0, which we hold (error-checking: not twice by one thread),
        // and the returned slice borrows this guard mutably.
        unsafe {
            std::slice::from_raw_parts_mut(m.ptr.as_ptr().add(m.locks * LOCK_SLOT), m.data_len())
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // We hold it: unlocking cannot fail.
        let _ = self.map.unlock_raw(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_shared_and_guarded() {
        let m = LockedMap::create("headrace-test", 2, 100).unwrap();
        assert_eq!(m.data_len(), 100);
        {
            let mut g = m.lock_data().unwrap();
            assert!(!g.recovered());
            g.data()[99] = 7;
            // Error-checking: the holder cannot take it twice.
            assert_eq!(
                m.lock_raw(0).unwrap_err().raw_os_error(),
                Some(libc::EDEADLK)
            );
        }
        assert_eq!(m.lock_data().unwrap().data()[99], 7);
        assert_eq!(m.try_lock_raw(1).unwrap(), Some(false));
        assert_eq!(m.unlock_raw(1).unwrap(), ());
        assert_eq!(
            m.unlock_raw(1).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn a_dead_holder_is_reported() {
        let m = std::sync::Arc::new(LockedMap::create("headrace-test", 1, 8).unwrap());
        let m2 = m.clone();
        // A thread that dies holding the lock is what a killed process looks like to a robust
        // mutex.
        std::thread::spawn(move || {
            std::mem::forget(m2.lock_data().unwrap());
        })
        .join()
        .unwrap();
        let g = m.lock_data().unwrap();
        assert!(g.recovered());
        drop(g);
        assert!(!m.lock_data().unwrap().recovered());
    }

    #[test]
    fn files_keep_the_data_and_refuse_another_size() {
        let dir = std::env::temp_dir().join(format!("headrace-shmlock-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        {
            let mut o = LockedMap::open_file(&dir, 1, 64).unwrap();
            assert!(o.fresh);
            o.map.init_locks().unwrap();
            o.map.lock_data().unwrap().data()[3] = 9;
        }
        {
            let mut o = LockedMap::open_file(&dir, 1, 64).unwrap();
            assert!(!o.fresh);
            o.map.init_locks().unwrap();
            assert_eq!(o.map.lock_data().unwrap().data()[3], 9);
        }
        assert!(LockedMap::open_file(&dir, 1, 65).is_err());
        let _ = std::fs::remove_file(&dir);
    }
}
