//! Caches (`--cache2`, `--cache`), shared areas (`--sharedarea`) and user locks (`--locks`):
//! shared memory the master makes before it forks, so every worker, mule and spooler sees it.
//!
//! Each cache is one [`LockedMap`] (a memfd, or its `store=` file mapped shared, as uWSGI
//! does) holding a [`table::Table`] behind one robust process-shared mutex; shared areas
//! ([`sharedarea`]) are the same without the table; user locks ([`locks`]) are a map of
//! `--locks + 1` mutexes and no data. The option grammar is in [`spec`]. Every call takes the
//! lock with the GIL released, copies in or out, and lets go: no Python runs while a lock is
//! held.

mod locks;
mod sharedarea;
mod spec;
mod table;

use super::AuxSpec;
use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use crate::sys::shmlock::LockedMap;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use spec::CacheSpec;
use std::sync::OnceLock;
use table::{Math, Refused, Table, Write};

pub use table::Figures;

/// One cache of this server.
struct Cache {
    spec: CacheSpec,
    map: LockedMap,
}

static CACHES: OnceLock<Vec<Cache>> = OnceLock::new();

/// Every cache this configuration asks for: the legacy one first (it is uWSGI's default
/// cache), then the `--cache2` ones in order.
fn specs(o: &OffloadConfig) -> Result<Vec<CacheSpec>, ConfigError> {
    let c = &o.cache;
    let mut out = Vec::new();
    let legacy = spec::legacy(c).map_err(|why| ConfigError::Invalid {
        option: "cache",
        value: c.legacy_items.to_string(),
        source_desc: "--cache".to_owned(),
        reason: why,
    })?;
    out.extend(legacy);
    for g in &c.caches {
        let s = spec::parse_cache2(&g.value, c.expire_freq.as_secs(), c.store_sync.as_secs())
            .map_err(|why| g.invalid("cache2", &why))?;
        if out.iter().any(|o: &CacheSpec| o.name == s.name) {
            return Err(g.invalid(
                "cache2",
                &format!("a cache named {:?} exists already", s.name),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Check the values only this part understands, when the configuration is read.
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    specs(o)?;
    let page = crate::sys::proc::page_size();
    for g in &o.cache.sharedareas {
        spec::parse_sharedarea(&g.value, page).map_err(|why| g.invalid("sharedarea", &why))?;
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// In the master, before the app is loaded (and before any fork): make the shared memory.
pub fn init_master(_py: Python<'_>, config: &Config) -> Result<(), String> {
    let o = &config.offload;
    let mut caches = Vec::new();
    for (i, s) in specs(o).map_err(|e| e.to_string())?.into_iter().enumerate() {
        caches.push(open_cache(i, s)?);
    }
    let _ = CACHES.set(caches);
    sharedarea::init_master(&o.cache.sharedareas)?;
    locks::init_master(o.cache.locks)?;
    Ok(())
}

fn open_cache(index: usize, s: CacheSpec) -> Result<Cache, String> {
    let g = s.geometry;
    let len = g
        .len()
        .ok_or_else(|| format!("cache \"{}\" would not fit in memory", s.name))?;
    for note in &s.notes {
        crate::log!("cache \"{}\": {note}", s.name);
    }
    let map = match &s.store {
        // Named by index: a memfd name is short and has no NUL, a cache name may be anything.
        None => LockedMap::create(&format!("headrace-cache-{index}"), 1, len)
            .map_err(|e| format!("cannot create cache \"{}\": {e}", s.name))?,
        Some(path) => {
            let shown = path.display();
            let opened = match LockedMap::open_file(path, 1, len) {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData && s.store_delete => {
                    crate::log!("Removing invalid cache store file: {shown}");
                    std::fs::remove_file(path).map_err(|e| {
                        format!("Cannot remove invalid cache store file {shown}: {e}")
                    })?;
                    LockedMap::open_file(path, 1, len)
                }
                other => other,
            };
            let mut opened = opened.map_err(|e| {
                format!("invalid cache store file {shown} for cache \"{}\" ({e}): remove it or fix the cache's items/blocksize to match", s.name)
            })?;
            if opened.fresh {
                crate::log!("creating a new cache store file: {shown}");
            }
            // A re-exec'd master keeps its pid, and the previous image's workers may still be
            // using this file's lock: keep it then. Otherwise nothing else uses the file (one
            // server per store file, as in uWSGI) and the lock is made anew, whatever state a
            // killed server left it in.
            let me = u64::try_from(crate::sys::proc::getpid()).unwrap_or(0);
            let owner = table::Table::new(opened.map.data_before_sharing(), g, s.policy)
                .header(table::H_MASTER_PID);
            if owner != me {
                if let Some(pid) = mapped_by(owner, path) {
                    return Err(format!(
                        "cache store file {shown} of cache \"{}\" is in use by another server (pid {pid})",
                        s.name
                    ));
                }
                opened.map.init_locks().map_err(|e| {
                    format!("cannot initialise the lock of cache \"{}\": {e}", s.name)
                })?;
            }
            opened.map
        }
    };
    {
        let mut guard = map
            .lock_data()
            .map_err(|e| format!("cannot lock cache \"{}\": {e}", s.name))?;
        let mut t = Table::new(guard.data(), g, s.policy);
        match t.open() {
            Ok(table::Opened::Fresh) => {}
            Ok(table::Opened::Restored { items, dropped }) => {
                if let Some(p) = &s.store {
                    crate::log!("recovered cache from backing store file: {}", p.display());
                }
                crate::log!("[uwsgi-cache] restored {items} items");
                if dropped > 0 {
                    crate::log!(
                        "[uwsgi-cache] dropped {dropped} items of cache \"{}\" left half-written by a killed process",
                        s.name
                    );
                }
            }
            Err(why) => {
                let file = s
                    .store
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string());
                return Err(format!(
                    "invalid cache store file {file} for cache \"{}\": {why}; remove it or fix the cache's items/blocksize to match",
                    s.name
                ));
            }
        }
        let me = u64::try_from(crate::sys::proc::getpid()).unwrap_or(0);
        t.set_header(table::H_MASTER_PID, me);
    }
    let mb = len / (1024 * 1024);
    crate::log!(
        "*** Cache \"{}\" initialized: {mb}MB (key: {} bytes, keys: {} items, data: {} bytes, bitmap: {}) preallocated ***",
        s.name,
        g.keysize,
        g.items,
        g.blocks * g.blocksize,
        u8::from(g.bitmap),
    );
    Ok(Cache { spec: s, map })
}

/// `Some(pid)` when process `pid` (the master that last owned a store file) is alive and has
/// `path` mapped: another server uses the file, whose lock must not be made anew under it. A
/// dead pid, or one reused by a process that does not map the file, is no owner.
fn mapped_by(pid: u64, path: &std::path::Path) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let want = std::fs::canonicalize(path).ok()?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let want = want.to_string_lossy();
    // A maps line ends with the mapped file's path, after spaces.
    maps.lines()
        .any(|l| {
            l.strip_suffix(want.as_ref())
                .is_some_and(|head| head.ends_with(' '))
        })
        .then_some(pid)
}

/// In every forked child that runs Python, after its role is set: the maps were inherited.
pub fn after_fork(_py: Python<'_>) {}

/// The auxiliary processes this part asks the master to run: none (expired items are swept
/// by whichever process touches the cache once `--cache-expire-freq` has passed).
#[must_use]
pub fn aux_specs(_config: &Config) -> Vec<AuxSpec> {
    Vec::new()
}

/// What a cache call did besides its answer, logged once the lock is released.
enum Note {
    Full(String, bool),
    Repaired(String, u64, u64),
    LockError(String, std::io::Error),
}

fn log_notes(notes: Vec<Note>) {
    for n in notes {
        match n {
            Note::Full(name, lru) => {
                if lru {
                    crate::log!("LRU item will be purged from cache \"{name}\"");
                } else {
                    crate::log!("*** DANGER cache \"{name}\" is FULL !!! ***");
                }
            }
            Note::Repaired(name, kept, dropped) => crate::log!(
                "CACHE: a process died holding the lock of cache \"{name}\": {kept} items kept, {dropped} half-written dropped"
            ),
            Note::LockError(name, e) => crate::log!("CACHE: cannot lock cache \"{name}\": {e}"),
        }
    }
}

/// Run `f` on cache `c`'s table under its lock (the caller has released the GIL).
fn with_table<T>(c: &Cache, f: impl FnOnce(&mut Table<'_>, u64) -> T) -> (Option<T>, Vec<Note>) {
    let mut notes = Vec::new();
    let mut guard = match c.map.lock_data() {
        Ok(g) => g,
        Err(e) => {
            notes.push(Note::LockError(c.spec.name.clone(), e));
            return (None, notes);
        }
    };
    let recovered = guard.recovered();
    let mut t = Table::new(guard.data(), c.spec.geometry, c.spec.policy);
    if recovered {
        let (kept, dropped) = t.repair();
        notes.push(Note::Repaired(c.spec.name.clone(), kept, dropped));
    }
    let now = now();
    let out = f(&mut t, now);
    if t.hit_full && !c.spec.policy.ignore_full {
        notes.push(Note::Full(c.spec.name.clone(), c.spec.policy.purge_lru));
    }
    if c.spec.store.is_some()
        && c.spec.store_sync > 0
        && now >= t.header(table::H_LAST_SYNC) + c.spec.store_sync
    {
        t.set_header(table::H_LAST_SYNC, now);
        drop(guard);
        // MS_ASYNC: the kernel writes the pages out; nothing waits.
        let _ = c.map.flush(false);
    }
    (Some(out), notes)
}

/// The cache a call names: `None` for the default (the first), a name, or `name@server`
/// (a remote cache: refused).
fn cache_named(name: Option<&str>) -> PyResult<Option<&'static Cache>> {
    let caches = CACHES.get().map_or(&[][..], Vec::as_slice);
    match name {
        None | Some("") => Ok(caches.first()),
        Some(n) if n.contains('@') => Err(PyValueError::new_err(format!(
            "remote caches ({n:?}) are not supported by headrace: use a local --cache2"
        ))),
        Some(n) => Ok(caches.iter().find(|c| c.spec.name == n)),
    }
}

/// A key or value as uWSGI's `s#` takes it: bytes, or str (UTF-8).
fn bytes_of<'a>(o: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    if let Ok(b) = o.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    if let Ok(s) = o.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be str or bytes, not {}",
        o.get_type().name()?
    )))
}

fn run<T: Send>(
    py: Python<'_>,
    cache: Option<&str>,
    f: impl FnOnce(&mut Table<'_>, u64) -> T + Send,
) -> PyResult<Option<T>> {
    let Some(c) = cache_named(cache)? else {
        return Ok(None);
    };
    let (out, notes) = py.detach(|| with_table(c, f));
    log_notes(notes);
    Ok(out)
}

fn expiry(expires: i64) -> u64 {
    u64::try_from(expires).unwrap_or(0)
}

fn write(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    w: Write<'_>,
    expires: i64,
    cache: Option<&str>,
) -> PyResult<Option<bool>> {
    let key = bytes_of(key, "key")?;
    let r = run(py, cache, |t, now| t.set(key, w, expiry(expires), now))?;
    Ok(match r {
        Some(Ok(())) => Some(true),
        Some(Err(
            Refused::Empty
            | Refused::KeyTooLong
            | Refused::TooLarge
            | Refused::Exists
            | Refused::Full,
        ))
        | None => None,
    })
}

/// `uwsgi.cache_get(key, cache=None)`: bytes, or None.
#[pyfunction]
#[pyo3(signature = (key, cache=None))]
fn cache_get<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    cache: Option<&str>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let key = bytes_of(key, "key")?;
    let v = run(py, cache, |t, now| t.get(key, now))?.flatten();
    Ok(v.map(|v| PyBytes::new(py, &v)))
}

/// `uwsgi.cache_num(key, cache=None)`: the value as a 64-bit number (0 when missing or not 8
/// bytes long).
#[pyfunction]
#[pyo3(signature = (key, cache=None))]
fn cache_num(py: Python<'_>, key: &Bound<'_, PyAny>, cache: Option<&str>) -> PyResult<i64> {
    let key = bytes_of(key, "key")?;
    let v = run(py, cache, |t, now| t.get(key, now))?.flatten();
    Ok(match v {
        Some(v) if v.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v);
            i64::from_le_bytes(a)
        }
        _ => 0,
    })
}

/// `uwsgi.cache_set(key, value, expires=0, cache=None)`: True, or None when the key exists,
/// the value does not fit, or the cache is full.
#[pyfunction]
#[pyo3(signature = (key, value, expires=0, cache=None))]
fn cache_set(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    expires: i64,
    cache: Option<&str>,
) -> PyResult<Option<bool>> {
    write(
        py,
        key,
        Write::Set(bytes_of(value, "value")?),
        expires,
        cache,
    )
}

/// `uwsgi.cache_update(key, value, expires=0, cache=None)`: set or replace.
#[pyfunction]
#[pyo3(signature = (key, value, expires=0, cache=None))]
fn cache_update(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    expires: i64,
    cache: Option<&str>,
) -> PyResult<Option<bool>> {
    write(
        py,
        key,
        Write::Update(bytes_of(value, "value")?),
        expires,
        cache,
    )
}

macro_rules! math_fn {
    ($name:ident, $op:expr, $default:expr, $doc:literal) => {
        #[doc = $doc]
        #[pyfunction]
        #[pyo3(signature = (key, value=$default, expires=0, cache=None))]
        fn $name(
            py: Python<'_>,
            key: &Bound<'_, PyAny>,
            value: i64,
            expires: i64,
            cache: Option<&str>,
        ) -> PyResult<Option<bool>> {
            write(py, key, Write::Math($op, value), expires, cache)
        }
    };
}

math_fn!(
    cache_inc,
    Math::Inc,
    1,
    "`uwsgi.cache_inc(key, value=1, expires=0, cache=None)`."
);
math_fn!(
    cache_dec,
    Math::Dec,
    1,
    "`uwsgi.cache_dec(key, value=1, expires=0, cache=None)`."
);
math_fn!(
    cache_mul,
    Math::Mul,
    2,
    "`uwsgi.cache_mul(key, value=2, expires=0, cache=None)`."
);
math_fn!(
    cache_div,
    Math::Div,
    2,
    "`uwsgi.cache_div(key, value=2, expires=0, cache=None)`."
);

/// `uwsgi.cache_del(key, cache=None)`: True, or None when the key was not there.
#[pyfunction]
#[pyo3(signature = (key, cache=None))]
fn cache_del(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    cache: Option<&str>,
) -> PyResult<Option<bool>> {
    let key = bytes_of(key, "key")?;
    let r = run(py, cache, |t, now| t.del(key, now))?;
    Ok(r.filter(|&d| d))
}

/// `uwsgi.cache_exists(key, cache=None)`: True or None.
#[pyfunction]
#[pyo3(signature = (key, cache=None))]
fn cache_exists(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    cache: Option<&str>,
) -> PyResult<Option<bool>> {
    let key = bytes_of(key, "key")?;
    let r = run(py, cache, |t, now| t.exists(key, now))?;
    Ok(r.filter(|&d| d))
}

/// `uwsgi.cache_clear(cache=None)`: True, or None without such a cache.
#[pyfunction]
#[pyo3(signature = (cache=None))]
fn cache_clear(py: Python<'_>, cache: Option<&str>) -> PyResult<Option<bool>> {
    #[expect(
        clippy::redundant_closure_for_method_calls,
        reason = "Table's lifetime must stay generic"
    )]
    let r = run(py, cache, |t, now| t.clear(now))?;
    Ok(r.map(|()| true))
}

/// `uwsgi.cache_keys(cache=None)`: the keys, as bytes (ValueError without such a cache).
#[pyfunction]
#[pyo3(signature = (cache=None))]
fn cache_keys<'py>(py: Python<'py>, cache: Option<&str>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    #[expect(
        clippy::redundant_closure_for_method_calls,
        reason = "Table's lifetime must stay generic"
    )]
    let keys = run(py, cache, |t, now| t.keys(now))?
        .ok_or_else(|| PyValueError::new_err("no local uWSGI cache available"))?;
    Ok(keys.iter().map(|k| PyBytes::new(py, k)).collect())
}

/// One cache's figures, for the stats server.
#[derive(Debug, Clone)]
pub struct CacheStats {
    /// Its name.
    pub name: String,
    /// Its hash function.
    pub hash: &'static str,
    /// Hash chains.
    pub hashsize: u64,
    /// Longest key.
    pub keysize: u64,
    /// Items it holds at most.
    pub max_items: u64,
    /// Blocks.
    pub blocks: u64,
    /// Bytes per block.
    pub blocksize: u64,
    /// The counters.
    pub figures: Figures,
}

/// Every cache's figures (uWSGI's `caches` in the stats), empty without caches. Also sweeps
/// expired items whose time has come, so `items` counts what a get would find.
#[must_use]
pub fn stats() -> Vec<CacheStats> {
    let caches = CACHES.get().map_or(&[][..], Vec::as_slice);
    caches
        .iter()
        .map(|c| {
            let g = c.spec.geometry;
            let (figures, notes) = with_table(c, |t, now| {
                t.maybe_sweep(now);
                t.figures()
            });
            log_notes(notes);
            CacheStats {
                name: c.spec.name.clone(),
                hash: "djb33x",
                hashsize: g.hashsize,
                keysize: g.keysize,
                max_items: g.items,
                blocks: g.blocks,
                blocksize: g.blocksize,
                figures: figures
                    .map(|f| Figures {
                        // uWSGI reports it only with `lastmod=1`.
                        last_modified_at: if c.spec.lastmod {
                            f.last_modified_at
                        } else {
                            0
                        },
                        ..f
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// This part's native functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cache_get, m)?)?;
    m.add_function(wrap_pyfunction!(cache_num, m)?)?;
    m.add_function(wrap_pyfunction!(cache_set, m)?)?;
    m.add_function(wrap_pyfunction!(cache_update, m)?)?;
    m.add_function(wrap_pyfunction!(cache_inc, m)?)?;
    m.add_function(wrap_pyfunction!(cache_dec, m)?)?;
    m.add_function(wrap_pyfunction!(cache_mul, m)?)?;
    m.add_function(wrap_pyfunction!(cache_div, m)?)?;
    m.add_function(wrap_pyfunction!(cache_del, m)?)?;
    m.add_function(wrap_pyfunction!(cache_exists, m)?)?;
    m.add_function(wrap_pyfunction!(cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(cache_keys, m)?)?;
    sharedarea::register(m)?;
    locks::register(m)?;
    Ok(())
}
