//! The grammar of `--cache2 name=...,items=...` and `--sharedarea`, and the legacy `--cache N`
//! (uWSGI's `uwsgi_cache_create` and `uwsgi_sharedarea_init_keyval`, same keys and defaults).

use super::table::{Geometry, Policy};
use crate::config::offload::CacheConfig;
use std::path::PathBuf;

/// uWSGI's default largest key.
const KEYSIZE: u64 = 2048;
/// uWSGI's default number of hash chains.
const HASHSIZE: u64 = 65536;
/// uWSGI's default block size (`UMAX16`).
const BLOCKSIZE: u64 = 65536;

/// One cache, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// Its name (`default` for the legacy cache).
    pub name: String,
    /// Its shape.
    pub geometry: Geometry,
    /// What it does when full.
    pub policy: Policy,
    /// `store=`: the file holding it.
    pub store: Option<PathBuf>,
    /// `store_sync=`: seconds between flushes of the store file (0: left to the kernel).
    pub store_sync: u64,
    /// `store_delete=1`: a store file of another shape is removed instead of refused.
    pub store_delete: bool,
    /// `lastmod=1`: the stats report when it last changed.
    pub lastmod: bool,
    /// Keys accepted that change nothing here, for a warning at startup.
    pub notes: Vec<String>,
}

fn number(key: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("{key}={v:?} is not a whole number"))
}

fn flag(v: &str) -> bool {
    !matches!(v.trim(), "0" | "false" | "no" | "off")
}

/// Parse one `--cache2` value (`expire_freq`: `--cache-expire-freq` in seconds;
/// `store_sync`: `--cache-store-sync`, the default of `store_sync=`).
pub fn parse_cache2(s: &str, expire_freq: u64, store_sync: u64) -> Result<CacheSpec, String> {
    let mut name = None;
    let mut items = None;
    let mut blocksize = BLOCKSIZE;
    let mut blocks = None;
    let mut keysize = KEYSIZE;
    let mut hashsize = HASHSIZE;
    let mut bitmap = false;
    let mut policy = Policy {
        expire_freq,
        ..Policy::default()
    };
    let mut store = None;
    let mut sync = store_sync;
    let mut store_delete = false;
    let mut notes = Vec::new();
    let mut lastmod = false;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "name" => name = Some(value.to_owned()),
            "items" | "max_items" | "maxitems" => items = Some(number(key, value)?),
            "blocksize" => blocksize = number(key, value)?,
            "blocks" => blocks = Some(number(key, value)?),
            "keysize" | "key_size" => keysize = number(key, value)?,
            "hashsize" | "hash_size" => hashsize = number(key, value)?,
            "bitmap" => bitmap = flag(value),
            "store" => store = Some(PathBuf::from(value)),
            "store_sync" | "storesync" => sync = number(key, value)?,
            "store_delete" | "storedelete" => store_delete = flag(value),
            "purge_lru" | "lru" => policy.purge_lru = flag(value),
            "ignore_full" => policy.ignore_full = flag(value),
            "clear_on_full" => policy.clear_on_full = flag(value),
            "math_initial" => {
                policy.math_initial = value
                    .parse()
                    .map_err(|_| format!("math_initial={value:?} is not a whole number"))?;
            }
            "hash" => {
                if value != "djb33x" {
                    notes.push(format!("hash={value}: keys are hashed with djb33x"));
                }
            }
            "lazy_expire" | "lazy" | "sweep_on_full" | "no_expire" => notes.push(format!(
                "{key}: expired items are never seen, and are swept every --cache-expire-freq and whenever the cache is full"
            )),
            "lastmod" => lastmod = flag(value),
            "nodes" | "sync" | "udp" | "udp_servers" | "udp_server" => {
                return Err(format!(
                    "{key}=: caches replicated over the network are not supported"
                ))
            }
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or("you have to specify a cache name (name=NAME)")?;
    if name.contains('@') {
        return Err(format!(
            "the cache name {name:?} has an '@' (that means a remote cache)"
        ));
    }
    let items = items
        .filter(|&n| n > 0)
        .ok_or("you have to specify the maximum number of cache items (items=N)")?;
    let blocks = blocks.unwrap_or(items);
    let spec = CacheSpec {
        name,
        geometry: Geometry {
            items,
            blocksize,
            blocks,
            keysize,
            hashsize,
            bitmap,
        },
        policy,
        store,
        store_sync: sync,
        store_delete,
        lastmod,
        notes,
    };
    check(&spec)?;
    Ok(spec)
}

fn check(spec: &CacheSpec) -> Result<(), String> {
    let g = &spec.geometry;
    if g.blocksize == 0 {
        return Err("blocksize must be at least 1".to_owned());
    }
    if g.blocks < g.items {
        return Err(format!(
            "blocks={} is fewer than items={}",
            g.blocks, g.items
        ));
    }
    if !g.bitmap && g.blocks != g.items {
        return Err("blocks= needs bitmap=1 (without it every item has one block)".to_owned());
    }
    if g.keysize == 0 || g.keysize >= 65536 {
        return Err(format!("keysize={} is not between 1 and 65535", g.keysize));
    }
    if g.hashsize == 0 {
        return Err("hashsize must be at least 1".to_owned());
    }
    if g.len().is_none_or(|n| n > (1 << 40)) {
        return Err("the cache would not fit in memory".to_owned());
    }
    Ok(())
}

/// The legacy cache (`--cache N`, `--cache-blocksize`, `--cache-store`, `--cache-store-sync`),
/// named `default` as in uWSGI; `None` when `--cache` is 0.
pub fn legacy(c: &CacheConfig) -> Result<Option<CacheSpec>, String> {
    if c.legacy_items == 0 {
        return Ok(None);
    }
    let spec = CacheSpec {
        name: "default".to_owned(),
        geometry: Geometry {
            items: c.legacy_items,
            blocksize: c.legacy_blocksize,
            blocks: c.legacy_items,
            keysize: KEYSIZE,
            hashsize: HASHSIZE,
            bitmap: false,
        },
        policy: Policy {
            expire_freq: c.expire_freq.as_secs(),
            ..Policy::default()
        },
        store: c.legacy_store.clone(),
        store_sync: c.store_sync.as_secs(),
        store_delete: false,
        lastmod: false,
        notes: Vec::new(),
    };
    check(&spec)?;
    Ok(Some(spec))
}

/// One `--sharedarea`: `N` pages, or `pages=N` / `size=BYTES`; how many bytes.
pub fn parse_sharedarea(s: &str, page: u64) -> Result<u64, String> {
    let s = s.trim();
    let bytes = if let Ok(pages) = s.parse::<u64>() {
        pages.checked_mul(page)
    } else {
        let mut bytes = None;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is neither a number of pages nor key=value"))?;
            match key.trim() {
                "pages" => bytes = number("pages", value)?.checked_mul(page),
                "size" => bytes = Some(number("size", value)?),
                k @ ("file" | "fd" | "ptr" | "offset") => {
                    return Err(format!("{k}=: only anonymous shared areas are supported"))
                }
                k => return Err(format!("unknown key {k:?}")),
            }
        }
        bytes
    };
    match bytes {
        Some(n) if n > 0 && n <= 1 << 40 => Ok(n),
        _ => Err("expected a number of pages, at least 1".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache2_values() {
        let c = parse_cache2("name=a,items=10", 3, 0).unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(
            c.geometry,
            Geometry {
                items: 10,
                blocksize: 65536,
                blocks: 10,
                keysize: 2048,
                hashsize: 65536,
                bitmap: false
            }
        );
        let c = parse_cache2(
            "name=b,items=4,blocksize=16,blocks=8,bitmap=1,keysize=32,purge_lru=1,store=/tmp/x,store_sync=2,math_initial=-3,hash=murmur2",
            3,
            0,
        )
        .unwrap();
        assert!(c.geometry.bitmap && c.policy.purge_lru);
        assert_eq!(
            (c.geometry.blocks, c.store_sync, c.policy.math_initial),
            (8, 2, -3)
        );
        assert_eq!(c.notes.len(), 1);
        for bad in [
            "items=10",
            "name=a",
            "name=a,items=0",
            "name=a,items=x",
            "name=a,items=3,color=red",
            "name=a,items=3,blocksize=0",
            "name=a,items=3,blocks=2,bitmap=1",
            "name=a,items=3,blocks=5",
            "name=a,items=3,keysize=70000",
            "name=a,items=3,nodes=127.0.0.1:4000",
            "name=a@b,items=3",
            "name=a,items=99999999999999,blocksize=99999999",
            "name=a,items",
        ] {
            assert!(parse_cache2(bad, 3, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn sharedarea_values() {
        assert_eq!(parse_sharedarea("2", 4096), Ok(8192));
        assert_eq!(parse_sharedarea("pages=1", 4096), Ok(4096));
        assert_eq!(parse_sharedarea("size=100", 4096), Ok(100));
        for bad in ["0", "x", "file=/tmp/a", "pages=0", "color=1"] {
            assert!(parse_sharedarea(bad, 4096).is_err(), "{bad}");
        }
    }
}
