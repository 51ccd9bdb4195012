//! One cache's table, laid out in a block of shared bytes (uWSGI's cache2 design: a fixed
//! number of items, each with one value of up to `blocksize` bytes, or with `bitmap=1` a run of
//! contiguous blocks; a hash table of chains; an LRU list; preallocated, never resized).
//!
//! The bytes are reached only under the cache's lock (`sys::shmlock`), so this is plain
//! single-threaded code over a `&mut [u8]`, unit-tested on a `Vec`. Layout (all numbers are
//! little-endian u64):
//!
//! ```text
//! header (HEADER bytes) | hash heads (hashsize) | items 0..=items (item 0 unused) | bitmap | data
//! ```
//!
//! Only the item records are the truth: the hash chains, LRU list, free list, block bitmap and
//! counters are derived, and [`Table::repair`] rebuilds them from the records. It runs when a
//! store file is opened and when a process died holding the lock; a record whose value was
//! being written at that moment (`IN_OP`/`OP_ITEM`) is dropped, so a torn value is never read.
#![allow(
    clippy::cast_possible_truncation,
    reason = "u64 counts and offsets to usize: Geometry::len checked that the whole table fits in usize, and indexes read from memory are checked against the geometry"
)]

/// "headrace cache" table format marker.
const MAGIC: u64 = 0x6863_6163_6865_0001;

/// Bytes of the header.
pub const HEADER: usize = 256;

// Header fields (byte offsets).
const H_MAGIC: usize = 0;
const H_ITEMS: usize = 8;
const H_BLOCKSIZE: usize = 16;
const H_BLOCKS: usize = 24;
const H_KEYSIZE: usize = 32;
const H_HASHSIZE: usize = 40;
const H_BITMAP: usize = 48;
/// The master that owns the locks of this table (a store file survives its server).
pub const H_MASTER_PID: usize = 56;
const H_N_ITEMS: usize = 64;
const H_HITS: usize = 72;
const H_MISS: usize = 80;
const H_FULL: usize = 88;
const H_LRU_HEAD: usize = 96;
const H_LRU_TAIL: usize = 104;
const H_FREE_HEAD: usize = 112;
const H_BITMAP_POS: usize = 120;
const H_NEXT_SWEEP: usize = 128;
const H_IN_OP: usize = 136;
const H_OP_ITEM: usize = 144;
const H_LAST_MODIFIED: usize = 152;
const H_STAMP: usize = 160;
/// When the store file was last flushed (unix seconds).
pub const H_LAST_SYNC: usize = 168;
/// The earliest expiry among the items (0: none expires), so that a sweep is skipped until
/// something can have expired (uWSGI's `next_scan`).
const H_NEXT_SCAN: usize = 176;

// Item record fields (byte offsets in a record); the key follows.
const I_KEYSIZE: usize = 0;
const I_VALSIZE: usize = 8;
const I_EXPIRES: usize = 16;
const I_HASH: usize = 24;
const I_NEXT: usize = 32;
const I_PREV: usize = 40;
const I_LRU_PREV: usize = 48;
const I_LRU_NEXT: usize = 56;
const I_FIRST_BLOCK: usize = 64;
const I_HITS: usize = 72;
const I_STAMP: usize = 80;
const I_KEY: usize = 88;

/// The shape of a cache, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Items it holds at most.
    pub items: u64,
    /// Bytes per block.
    pub blocksize: u64,
    /// Blocks (one per item without a bitmap).
    pub blocks: u64,
    /// Longest key.
    pub keysize: u64,
    /// Hash chains.
    pub hashsize: u64,
    /// Values take runs of contiguous blocks (`bitmap=1`).
    pub bitmap: bool,
}

impl Geometry {
    fn rec_len(&self) -> usize {
        (I_KEY + self.keysize as usize).next_multiple_of(8)
    }
    fn items_off(&self) -> usize {
        HEADER + self.hashsize as usize * 8
    }
    fn bitmap_off(&self) -> usize {
        self.items_off() + (self.items as usize + 1) * self.rec_len()
    }
    fn bitmap_len(&self) -> usize {
        if self.bitmap {
            (self.blocks as usize).div_ceil(8).next_multiple_of(8)
        } else {
            0
        }
    }
    fn data_off(&self) -> usize {
        self.bitmap_off() + self.bitmap_len()
    }

    /// Bytes the table needs; `None` when that does not fit in memory.
    #[must_use]
    pub fn len(&self) -> Option<usize> {
        let rec = u64::try_from(I_KEY)
            .ok()?
            .checked_add(self.keysize)?
            .next_multiple_of(8);
        let n = (HEADER as u64)
            .checked_add(self.hashsize.checked_mul(8)?)?
            .checked_add(self.items.checked_add(1)?.checked_mul(rec)?)?
            .checked_add(self.blocks.div_ceil(8).next_multiple_of(8))?
            .checked_add(self.blocks.checked_mul(self.blocksize)?)?;
        let n = usize::try_from(n).ok()?;
        // Offsets are computed in usize from here on: leave room so they cannot overflow.
        (n < usize::MAX / 4).then_some(n)
    }

    /// The largest value.
    #[must_use]
    pub fn max_value(&self) -> u64 {
        if self.bitmap {
            self.blocks * self.blocksize
        } else {
            self.blocksize
        }
    }
}

/// What the cache does when it is full (uWSGI's `purge_lru`, `clear_on_full`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Evict the least recently used item to make room.
    pub purge_lru: bool,
    /// Empty the whole cache when it is full.
    pub clear_on_full: bool,
    /// Do not log when full.
    pub ignore_full: bool,
    /// The value `cache_inc`/`dec`/`mul`/`div` start from for a missing key.
    pub math_initial: i64,
    /// Seconds between sweeps of expired items (at least 1).
    pub expire_freq: u64,
}

/// `cache_inc`, `cache_dec`, `cache_mul`, `cache_div`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Math {
    /// Add.
    Inc,
    /// Subtract.
    Dec,
    /// Multiply.
    Mul,
    /// Divide (by zero gives 0, as uWSGI).
    Div,
}

impl Math {
    /// uWSGI's 64-bit signed arithmetic (wrapping where C would overflow).
    #[must_use]
    pub fn apply(self, num: i64, delta: i64) -> i64 {
        match self {
            Self::Inc => num.wrapping_add(delta),
            Self::Dec => num.wrapping_sub(delta),
            Self::Mul => num.wrapping_mul(delta),
            Self::Div if delta == 0 => 0,
            Self::Div => num.wrapping_div(delta),
        }
    }
}

/// A write.
#[derive(Debug, Clone, Copy)]
pub enum Write<'v> {
    /// Add the key; refused when it exists (`cache_set`).
    Set(&'v [u8]),
    /// Add or replace (`cache_update`).
    Update(&'v [u8]),
    /// Arithmetic on the value as a 64-bit number; the expiry of an existing key is kept.
    Math(Math, i64),
}

/// Why a write was refused (uWSGI answers `None` for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Empty key or empty value.
    Empty,
    /// The key is longer than `keysize`.
    KeyTooLong,
    /// The value is larger than the cache's largest.
    TooLarge,
    /// `cache_set` of a key that exists.
    Exists,
    /// No room, even after purging.
    Full,
}

/// A cache's figures (uWSGI's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Items stored.
    pub items: u64,
    /// Successful gets.
    pub hits: u64,
    /// Failed gets.
    pub miss: u64,
    /// Times a write found the cache full.
    pub full: u64,
    /// Unix time of the last change.
    pub last_modified_at: u64,
}

/// What opening a table found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It was blank: laid out empty.
    Fresh,
    /// It held a table of this geometry: its items were kept (`dropped`: half-written ones).
    Restored {
        /// Items kept.
        items: u64,
        /// Items dropped.
        dropped: u64,
    },
}

/// A table over the cache's bytes, while its lock is held.
pub struct Table<'a> {
    b: &'a mut [u8],
    g: Geometry,
    p: Policy,
    /// Set when a write found the cache full (the caller logs uWSGI's line after unlocking).
    pub hit_full: bool,
}

/// uWSGI's default key hash (`djb33x`).
#[must_use]
pub fn djb33x(key: &[u8]) -> u64 {
    let mut h: u32 = 5381;
    for &c in key {
        // uWSGI xors a `char`, signed on x86: sign-extend to match its hash values.
        #[expect(clippy::cast_possible_wrap, clippy::cast_sign_loss, reason = "C char")]
        let c = i32::from(c as i8) as u32;
        h = (h << 5).wrapping_add(h) ^ c;
    }
    u64::from(h)
}

impl<'a> Table<'a> {
    /// A table over `b` (at least `g.len()` bytes), laid out already ([`Table::open`]).
    #[must_use]
    pub fn new(b: &'a mut [u8], g: Geometry, p: Policy) -> Self {
        Self {
            b,
            g,
            p,
            hit_full: false,
        }
    }

    fn rd(&self, off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.b[off..off + 8]);
        u64::from_le_bytes(a)
    }
    fn wr(&mut self, off: usize, v: u64) {
        self.b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn item(&self, i: u64) -> usize {
        self.g.items_off() + i as usize * self.g.rec_len()
    }
    fn ird(&self, i: u64, f: usize) -> u64 {
        self.rd(self.item(i) + f)
    }
    fn iwr(&mut self, i: u64, f: usize, v: u64) {
        let o = self.item(i) + f;
        self.wr(o, v);
    }
    fn head_off(&self, h: u64) -> usize {
        HEADER + (h % self.g.hashsize) as usize * 8
    }
    fn valid(&self, i: u64) -> bool {
        (1..=self.g.items).contains(&i)
    }
    fn bump(&mut self, f: usize) {
        let v = self.rd(f).wrapping_add(1);
        self.wr(f, v);
    }

    /// Lay the table out, or check and repair the one found (a store file). Errors: the
    /// bytes hold a table of another geometry.
    pub fn open(&mut self) -> Result<Opened, String> {
        if self.rd(H_MAGIC) != MAGIC {
            if self.b.iter().any(|&c| c != 0) {
                return Err("it does not hold a headrace cache".to_owned());
            }
            let g = self.g;
            for (f, v) in [
                (H_ITEMS, g.items),
                (H_BLOCKSIZE, g.blocksize),
                (H_BLOCKS, g.blocks),
                (H_KEYSIZE, g.keysize),
                (H_HASHSIZE, g.hashsize),
                (H_BITMAP, u64::from(g.bitmap)),
            ] {
                self.wr(f, v);
            }
            self.repair();
            self.wr(H_MAGIC, MAGIC);
            return Ok(Opened::Fresh);
        }
        let found = Geometry {
            items: self.rd(H_ITEMS),
            blocksize: self.rd(H_BLOCKSIZE),
            blocks: self.rd(H_BLOCKS),
            keysize: self.rd(H_KEYSIZE),
            hashsize: self.rd(H_HASHSIZE),
            bitmap: self.rd(H_BITMAP) != 0,
        };
        if found != self.g {
            return Err(format!(
                "it was made for items={},blocksize={},blocks={},keysize={},hashsize={},bitmap={}",
                found.items,
                found.blocksize,
                found.blocks,
                found.keysize,
                found.hashsize,
                u8::from(found.bitmap)
            ));
        }
        let (items, dropped) = self.repair();
        Ok(Opened::Restored { items, dropped })
    }

    /// Rebuild everything derived from the item records (hash chains, LRU, free list, bitmap,
    /// count), dropping records that are invalid or were being written. Returns (kept, dropped).
    pub fn repair(&mut self) -> (u64, u64) {
        let g = self.g;
        let torn = if self.rd(H_IN_OP) != 0 {
            self.rd(H_OP_ITEM)
        } else {
            0
        };
        let hash_end = self.g.items_off();
        self.b[HEADER..hash_end].fill(0);
        let (bo, bl) = (g.bitmap_off(), g.bitmap_len());
        self.b[bo..bo + bl].fill(0);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut dropped = 0;
        for i in 1..=g.items {
            let ks = self.ird(i, I_KEYSIZE);
            if ks == 0 {
                continue;
            }
            let vs = self.ird(i, I_VALSIZE);
            let fb = self.ird(i, I_FIRST_BLOCK);
            let ok = i != torn
                && ks <= g.keysize
                && vs > 0
                && vs <= g.max_value()
                && if g.bitmap {
                    fb.checked_add(vs.div_ceil(g.blocksize))
                        .is_some_and(|end| end <= g.blocks)
                        && self.blocks_free(fb, vs.div_ceil(g.blocksize))
                } else {
                    fb == i - 1
                };
            if !ok {
                self.iwr(i, I_KEYSIZE, 0);
                dropped += 1;
                continue;
            }
            if g.bitmap {
                self.mark(fb, vs.div_ceil(g.blocksize), true);
            }
            live.push((self.ird(i, I_STAMP), i));
        }
        live.sort_unstable();
        self.wr(H_LRU_HEAD, 0);
        self.wr(H_LRU_TAIL, 0);
        self.wr(H_N_ITEMS, 0);
        let mut stamp = 0;
        self.wr(H_NEXT_SCAN, 0);
        for &(s, i) in &live {
            stamp = stamp.max(s);
            let e = self.ird(i, I_EXPIRES);
            self.expires_at(e);
            let ko = self.item(i) + I_KEY;
            let ks = self.ird(i, I_KEYSIZE) as usize;
            let h = djb33x(&self.b[ko..ko + ks]);
            self.iwr(i, I_HASH, h);
            self.link(i, h);
            self.lru_push(i);
            self.bump(H_N_ITEMS);
        }
        self.wr(H_STAMP, stamp);
        self.wr(H_FREE_HEAD, 0);
        for i in (1..=g.items).rev() {
            if self.ird(i, I_KEYSIZE) == 0 {
                self.free_push(i);
            }
        }
        self.wr(H_BITMAP_POS, 0);
        self.wr(H_IN_OP, 0);
        self.wr(H_OP_ITEM, 0);
        (live.len() as u64, dropped)
    }

    fn link(&mut self, i: u64, h: u64) {
        let ho = self.head_off(h);
        let first = self.rd(ho);
        self.iwr(i, I_PREV, 0);
        self.iwr(i, I_NEXT, first);
        if self.valid(first) {
            self.iwr(first, I_PREV, i);
        }
        self.wr(ho, i);
    }

    fn unlink(&mut self, i: u64) {
        let (prev, next) = (self.ird(i, I_PREV), self.ird(i, I_NEXT));
        if self.valid(prev) {
            self.iwr(prev, I_NEXT, next);
        } else {
            let ho = self.head_off(self.ird(i, I_HASH));
            self.wr(ho, next);
        }
        if self.valid(next) {
            self.iwr(next, I_PREV, prev);
        }
    }

    fn lru_push(&mut self, i: u64) {
        let tail = self.rd(H_LRU_TAIL);
        self.iwr(i, I_LRU_PREV, tail);
        self.iwr(i, I_LRU_NEXT, 0);
        if self.valid(tail) {
            self.iwr(tail, I_LRU_NEXT, i);
        } else {
            self.wr(H_LRU_HEAD, i);
        }
        self.wr(H_LRU_TAIL, i);
        let s = self.rd(H_STAMP) + 1;
        self.wr(H_STAMP, s);
        self.iwr(i, I_STAMP, s);
    }

    fn lru_remove(&mut self, i: u64) {
        let (prev, next) = (self.ird(i, I_LRU_PREV), self.ird(i, I_LRU_NEXT));
        if self.valid(next) {
            self.iwr(next, I_LRU_PREV, prev);
        } else {
            self.wr(H_LRU_TAIL, prev);
        }
        if self.valid(prev) {
            self.iwr(prev, I_LRU_NEXT, next);
        } else {
            self.wr(H_LRU_HEAD, next);
        }
    }

    fn free_push(&mut self, i: u64) {
        let head = self.rd(H_FREE_HEAD);
        self.iwr(i, I_NEXT, head);
        self.wr(H_FREE_HEAD, i);
    }

    fn free_pop(&mut self) -> Option<u64> {
        let i = self.rd(H_FREE_HEAD);
        if !self.valid(i) || self.ird(i, I_KEYSIZE) != 0 {
            return None;
        }
        let next = self.ird(i, I_NEXT);
        self.wr(H_FREE_HEAD, next);
        Some(i)
    }

    fn bit(&self, n: u64) -> bool {
        self.b[self.g.bitmap_off() + (n / 8) as usize] & (1 << (n % 8)) != 0
    }

    fn blocks_free(&self, first: u64, count: u64) -> bool {
        (first..first + count).all(|n| !self.bit(n))
    }

    fn mark(&mut self, first: u64, count: u64, used: bool) {
        let off = self.g.bitmap_off();
        for n in first..first + count {
            let byte = &mut self.b[off + (n / 8) as usize];
            if used {
                *byte |= 1 << (n % 8);
            } else {
                *byte &= !(1 << (n % 8));
            }
        }
    }

    /// First run of `count` free blocks, searching from after the last one given (uWSGI).
    fn find_blocks(&self, count: u64) -> Option<u64> {
        let blocks = self.g.blocks;
        if count == 0 || count > blocks {
            return None;
        }
        let start = self.rd(H_BITMAP_POS).min(blocks);
        let scan = |from: u64, to: u64| {
            let mut run = 0;
            for n in from..to {
                if self.bit(n) {
                    run = 0;
                } else {
                    run += 1;
                    if run == count {
                        return Some(n + 1 - count);
                    }
                }
            }
            None
        };
        scan(start, blocks).or_else(|| scan(0, (start + count).min(blocks)))
    }

    fn expired(&self, i: u64, now: u64) -> bool {
        let e = self.ird(i, I_EXPIRES);
        e != 0 && e <= now
    }

    fn key_at(&self, i: u64) -> &[u8] {
        let ko = self.item(i) + I_KEY;
        let ks = (self.ird(i, I_KEYSIZE) as usize).min(self.g.keysize as usize);
        &self.b[ko..ko + ks]
    }

    fn value_at(&self, i: u64) -> &[u8] {
        let g = self.g;
        let off = g.data_off() + (self.ird(i, I_FIRST_BLOCK) * g.blocksize) as usize;
        let len = self.ird(i, I_VALSIZE).min(g.max_value()) as usize;
        &self.b[off..off + len]
    }

    /// The item holding `key`, if any and not expired (an expired one is removed: expired
    /// items are never seen, whenever the sweep runs).
    fn find(&mut self, key: &[u8], now: u64) -> Option<u64> {
        let h = djb33x(key);
        let mut i = self.rd(self.head_off(h));
        let mut steps = 0;
        while self.valid(i) && steps <= self.g.items {
            if self.ird(i, I_HASH) == h && self.key_at(i) == key {
                if self.expired(i, now) {
                    self.remove(i);
                    return None;
                }
                return Some(i);
            }
            i = self.ird(i, I_NEXT);
            steps += 1;
        }
        None
    }

    fn remove(&mut self, i: u64) {
        if self.ird(i, I_KEYSIZE) == 0 {
            return;
        }
        self.unlink(i);
        self.lru_remove(i);
        if self.g.bitmap {
            let n = self.ird(i, I_VALSIZE).div_ceil(self.g.blocksize);
            self.mark(self.ird(i, I_FIRST_BLOCK), n, false);
        }
        for f in [I_KEYSIZE, I_VALSIZE, I_EXPIRES, I_HASH, I_PREV, I_HITS] {
            self.iwr(i, f, 0);
        }
        self.free_push(i);
        let n = self.rd(H_N_ITEMS).saturating_sub(1);
        self.wr(H_N_ITEMS, n);
    }

    fn modified(&mut self, now: u64) {
        self.wr(H_LAST_MODIFIED, now);
    }

    /// Sweep expired items when `expire_freq` has passed since the last sweep.
    pub fn maybe_sweep(&mut self, now: u64) -> u64 {
        if now < self.rd(H_NEXT_SWEEP) {
            return 0;
        }
        self.wr(H_NEXT_SWEEP, now + self.p.expire_freq.max(1));
        if !self.sweep_due(now) {
            return 0;
        }
        self.sweep(now)
    }

    /// Some item can have expired by `now`.
    fn sweep_due(&self, now: u64) -> bool {
        let next = self.rd(H_NEXT_SCAN);
        next != 0 && now >= next
    }

    fn expires_at(&mut self, deadline: u64) {
        let next = self.rd(H_NEXT_SCAN);
        if deadline != 0 && (next == 0 || deadline < next) {
            self.wr(H_NEXT_SCAN, deadline);
        }
    }

    /// Remove every expired item; how many.
    pub fn sweep(&mut self, now: u64) -> u64 {
        let mut n = 0;
        self.wr(H_NEXT_SCAN, 0);
        for i in 1..=self.g.items {
            if self.ird(i, I_KEYSIZE) == 0 {
                continue;
            }
            if self.expired(i, now) {
                self.remove(i);
                n += 1;
            } else {
                let e = self.ird(i, I_EXPIRES);
                self.expires_at(e);
            }
        }
        if n > 0 {
            self.modified(now);
        }
        n
    }

    /// The value of `key` (counts a hit or a miss).
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<Vec<u8>> {
        self.maybe_sweep(now);
        let Some(i) = self.find(key, now) else {
            self.bump(H_MISS);
            return None;
        };
        self.bump(H_HITS);
        let hits = self.ird(i, I_HITS) + 1;
        self.iwr(i, I_HITS, hits);
        self.lru_remove(i);
        self.lru_push(i);
        Some(self.value_at(i).to_vec())
    }

    /// The key is there (and not expired).
    pub fn exists(&mut self, key: &[u8], now: u64) -> bool {
        self.maybe_sweep(now);
        self.find(key, now).is_some()
    }

    /// Remove `key`; false when it was not there.
    pub fn del(&mut self, key: &[u8], now: u64) -> bool {
        match self.find(key, now) {
            Some(i) => {
                self.remove(i);
                self.modified(now);
                true
            }
            None => false,
        }
    }

    /// Remove every item.
    pub fn clear(&mut self, now: u64) {
        for i in 1..=self.g.items {
            self.remove(i);
        }
        self.modified(now);
    }

    /// The keys, in slot order (as uWSGI), expired ones left out.
    pub fn keys(&mut self, now: u64) -> Vec<Vec<u8>> {
        self.maybe_sweep(now);
        (1..=self.g.items)
            .filter(|&i| self.ird(i, I_KEYSIZE) != 0 && !self.expired(i, now))
            .map(|i| self.key_at(i).to_vec())
            .collect()
    }

    /// The cache's figures.
    #[must_use]
    pub fn figures(&self) -> Figures {
        Figures {
            items: self.rd(H_N_ITEMS),
            hits: self.rd(H_HITS),
            miss: self.rd(H_MISS),
            full: self.rd(H_FULL),
            last_modified_at: self.rd(H_LAST_MODIFIED),
        }
    }

    /// A header field (the glue keeps its master pid and last sync there).
    #[must_use]
    pub fn header(&self, field: usize) -> u64 {
        self.rd(field)
    }

    /// Set a header field.
    pub fn set_header(&mut self, field: usize, v: u64) {
        self.wr(field, v);
    }

    /// The cache is full: count it, then make room as the policy says (uWSGI's
    /// `cache_full`). Expired items go first: they are never seen, so they never count.
    fn make_room(&mut self, now: u64) {
        // Only when something can have expired: an LRU cache at capacity makes room on every
        // insert, and must not scan every item each time.
        if self.sweep_due(now) && self.sweep(now) > 0 {
            return;
        }
        self.bump(H_FULL);
        self.hit_full = true;
        if self.p.purge_lru {
            let lru = self.rd(H_LRU_HEAD);
            if self.valid(lru) {
                self.remove(lru);
            }
        } else if self.p.clear_on_full {
            self.clear(now);
        }
    }

    fn begin(&mut self, i: u64) {
        self.wr(H_OP_ITEM, i);
        self.wr(H_IN_OP, 1);
    }

    fn end(&mut self, now: u64) {
        self.wr(H_IN_OP, 0);
        self.modified(now);
    }

    fn num_at(&self, i: u64) -> i64 {
        let v = self.value_at(i);
        let mut a = [0u8; 8];
        let n = v.len().min(8);
        a[..n].copy_from_slice(&v[..n]);
        i64::from_le_bytes(a)
    }

    /// Blocks for a value of `len` bytes (with a bitmap), making room once if needed.
    fn alloc_blocks(&mut self, len: u64, now: u64) -> Option<u64> {
        let count = len.div_ceil(self.g.blocksize);
        let first = if let Some(f) = self.find_blocks(count) {
            f
        } else {
            self.make_room(now);
            self.find_blocks(count)?
        };
        self.take_blocks(first, count);
        Some(first)
    }

    fn take_blocks(&mut self, first: u64, count: u64) {
        self.mark(first, count, true);
        let next = first + count;
        self.wr(H_BITMAP_POS, if next >= self.g.blocks { 0 } else { next });
    }

    /// Make existing item `i` ready for a new value of `len` bytes (moving it with a bitmap);
    /// the write has begun when this returns Ok.
    fn reuse(&mut self, i: u64, len: u64, set_expiry: bool, deadline: u64) -> Result<u64, Refused> {
        let g = self.g;
        if g.bitmap {
            let count = len.div_ceil(g.blocksize);
            let (old, old_n) = (
                self.ird(i, I_FIRST_BLOCK),
                self.ird(i, I_VALSIZE).div_ceil(g.blocksize),
            );
            self.mark(old, old_n, false);
            let Some(first) = self.find_blocks(count) else {
                // No room for the new value: the old one stays (as uWSGI).
                self.mark(old, old_n, true);
                self.bump(H_FULL);
                self.hit_full = true;
                return Err(Refused::Full);
            };
            self.begin(i);
            self.take_blocks(first, count);
            self.iwr(i, I_FIRST_BLOCK, first);
        } else {
            self.begin(i);
        }
        if set_expiry {
            self.iwr(i, I_EXPIRES, deadline);
            self.expires_at(deadline);
        }
        self.lru_remove(i);
        self.lru_push(i);
        Ok(i)
    }

    /// Take a free item for a new key with a value of `len` bytes, making room if needed; the
    /// write has begun when this returns Ok.
    fn place(&mut self, key: &[u8], len: u64, deadline: u64, now: u64) -> Result<u64, Refused> {
        let i = if let Some(i) = self.free_pop() {
            i
        } else {
            self.make_room(now);
            self.free_pop().ok_or(Refused::Full)?
        };
        let first = if self.g.bitmap {
            let Some(f) = self.alloc_blocks(len, now) else {
                self.free_push(i);
                return Err(Refused::Full);
            };
            f
        } else {
            i - 1
        };
        self.begin(i);
        let h = djb33x(key);
        for (f, v) in [
            (I_FIRST_BLOCK, first),
            (I_EXPIRES, deadline),
            (I_HASH, h),
            (I_HITS, 0),
        ] {
            self.iwr(i, f, v);
        }
        self.expires_at(deadline);
        let ko = self.item(i) + I_KEY;
        self.b[ko..ko + key.len()].copy_from_slice(key);
        self.iwr(i, I_KEYSIZE, key.len() as u64);
        self.link(i, h);
        self.lru_push(i);
        self.bump(H_N_ITEMS);
        Ok(i)
    }

    /// Store a value (`expires`: seconds from `now`, 0 for never).
    pub fn set(&mut self, key: &[u8], w: Write<'_>, expires: u64, now: u64) -> Result<(), Refused> {
        let len = match w {
            Write::Set(v) | Write::Update(v) => v.len() as u64,
            Write::Math(..) => 8,
        };
        if key.is_empty() || len == 0 {
            return Err(Refused::Empty);
        }
        if key.len() as u64 > self.g.keysize {
            return Err(Refused::KeyTooLong);
        }
        if len > self.g.max_value() {
            return Err(Refused::TooLarge);
        }
        self.maybe_sweep(now);
        let deadline = if expires > 0 {
            now.saturating_add(expires)
        } else {
            0
        };
        let existing = self.find(key, now);
        let num;
        let value: &[u8] = match (w, existing) {
            (Write::Set(_), Some(_)) => return Err(Refused::Exists),
            (Write::Set(v) | Write::Update(v), _) => v,
            (Write::Math(op, delta), Some(i)) => {
                num = op.apply(self.num_at(i), delta).to_le_bytes();
                &num
            }
            (Write::Math(op, delta), None) => {
                num = op.apply(self.p.math_initial, delta).to_le_bytes();
                &num
            }
        };
        let i = match existing {
            Some(i) => self.reuse(i, len, !matches!(w, Write::Math(..)), deadline)?,
            None => self.place(key, len, deadline, now)?,
        };
        let off = self.g.data_off() + (self.ird(i, I_FIRST_BLOCK) * self.g.blocksize) as usize;
        self.b[off..off + value.len()].copy_from_slice(value);
        self.iwr(i, I_VALSIZE, len);
        self.end(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(items: u64, blocksize: u64, bitmap: bool, blocks: u64) -> Geometry {
        Geometry {
            items,
            blocksize,
            blocks,
            keysize: 16,
            hashsize: 7,
            bitmap,
        }
    }

    fn table(buf: &mut Vec<u8>, g: Geometry, p: Policy) -> Table<'_> {
        buf.resize(g.len().unwrap(), 0);
        let mut t = Table::new(buf, g, p);
        if t.rd(H_MAGIC) == 0 {
            assert_eq!(t.open(), Ok(Opened::Fresh));
        }
        t
    }

    #[test]
    fn djb33x_matches_uwsgi() {
        // Values from uWSGI's C function.
        assert_eq!(djb33x(b""), 5381);
        assert_eq!(djb33x(b"a"), (5381u64 * 33) ^ 0x61);
    }

    #[test]
    fn set_get_update_del() {
        let mut buf = Vec::new();
        let mut t = table(&mut buf, geo(3, 8, false, 3), Policy::default());
        assert_eq!(t.get(b"k", 100), None);
        assert_eq!(t.set(b"k", Write::Set(b"v1"), 0, 100), Ok(()));
        assert_eq!(t.set(b"k", Write::Set(b"v2"), 0, 100), Err(Refused::Exists));
        assert_eq!(t.get(b"k", 100).as_deref(), Some(&b"v1"[..]));
        assert_eq!(t.set(b"k", Write::Update(b"v3"), 0, 100), Ok(()));
        assert_eq!(t.get(b"k", 100).as_deref(), Some(&b"v3"[..]));
        assert_eq!(
            t.set(b"k", Write::Update(b"123456789"), 0, 100),
            Err(Refused::TooLarge)
        );
        assert_eq!(t.set(b"k", Write::Update(b""), 0, 100), Err(Refused::Empty));
        assert_eq!(t.set(b"", Write::Update(b"x"), 0, 100), Err(Refused::Empty));
        assert_eq!(
            t.set(&[b'k'; 17], Write::Update(b"x"), 0, 100),
            Err(Refused::KeyTooLong)
        );
        assert!(t.exists(b"k", 100));
        assert!(t.del(b"k", 100));
        assert!(!t.del(b"k", 100));
        assert!(!t.exists(b"k", 100));
        let f = t.figures();
        assert_eq!((f.items, f.hits, f.miss), (0, 2, 1));
    }

    #[test]
    fn full_and_lru() {
        let mut buf = Vec::new();
        let mut t = table(&mut buf, geo(2, 8, false, 2), Policy::default());
        t.set(b"a", Write::Set(b"1"), 0, 1).unwrap();
        t.set(b"b", Write::Set(b"2"), 0, 1).unwrap();
        assert_eq!(t.set(b"c", Write::Set(b"3"), 0, 1), Err(Refused::Full));
        assert!(t.hit_full);
        assert_eq!(t.figures().full, 1);
        let mut buf = Vec::new();
        let p = Policy {
            purge_lru: true,
            ..Policy::default()
        };
        let mut t = table(&mut buf, geo(2, 8, false, 2), p);
        t.set(b"a", Write::Set(b"1"), 0, 1).unwrap();
        t.set(b"b", Write::Set(b"2"), 0, 1).unwrap();
        t.get(b"a", 1).unwrap();
        t.set(b"c", Write::Set(b"3"), 0, 1).unwrap();
        assert_eq!(t.keys(1), vec![b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn expired_items_are_invisible_and_make_room() {
        let mut buf = Vec::new();
        let mut t = table(&mut buf, geo(1, 8, false, 1), Policy::default());
        t.set(b"a", Write::Set(b"1"), 5, 100).unwrap();
        assert!(t.exists(b"a", 104));
        assert_eq!(t.get(b"a", 105), None);
        assert!(t.keys(105).is_empty());
        t.set(b"a", Write::Set(b"1"), 5, 100).unwrap();
        assert_eq!(t.rd(H_NEXT_SCAN), 105);
        // Full of an expired item: it goes, the new one fits.
        t.set(b"b", Write::Set(b"2"), 0, 200).unwrap();
        assert_eq!(t.figures().full, 0);
        assert_eq!(t.figures().items, 1);
        // Nothing expires: sweeps have nothing to look for.
        assert_eq!(t.rd(H_NEXT_SCAN), 0);
        assert_eq!(t.maybe_sweep(1000), 0);
    }

    #[test]
    fn math_is_uwsgi_64_bit() {
        let mut buf = Vec::new();
        let p = Policy {
            math_initial: 0,
            ..Policy::default()
        };
        let mut t = table(&mut buf, geo(4, 8, false, 4), p);
        t.set(b"n", Write::Math(Math::Inc, 5), 0, 1).unwrap();
        t.set(b"n", Write::Math(Math::Mul, 3), 0, 1).unwrap();
        t.set(b"n", Write::Math(Math::Dec, 1), 0, 1).unwrap();
        t.set(b"n", Write::Math(Math::Div, 2), 0, 1).unwrap();
        assert_eq!(t.get(b"n", 1), Some(7i64.to_le_bytes().to_vec()));
        t.set(b"n", Write::Math(Math::Div, 0), 0, 1).unwrap();
        assert_eq!(t.get(b"n", 1), Some(0i64.to_le_bytes().to_vec()));
        t.set(b"m", Write::Update(&i64::MAX.to_le_bytes()), 0, 1)
            .unwrap();
        t.set(b"m", Write::Math(Math::Inc, 1), 0, 1).unwrap();
        assert_eq!(t.get(b"m", 1), Some(i64::MIN.to_le_bytes().to_vec()));
        // Math keeps the expiry of an existing key.
        t.set(b"e", Write::Update(&1i64.to_le_bytes()), 10, 1)
            .unwrap();
        t.set(b"e", Write::Math(Math::Inc, 1), 0, 2).unwrap();
        assert_eq!(t.get(b"e", 11), None);
    }

    #[test]
    fn bitmap_values_span_blocks() {
        let mut buf = Vec::new();
        let mut t = table(&mut buf, geo(4, 4, true, 6), Policy::default());
        t.set(b"a", Write::Set(b"0123456789"), 0, 1).unwrap(); // 3 blocks
        t.set(b"b", Write::Set(b"abcdefgh"), 0, 1).unwrap(); // 2 blocks
        assert_eq!(t.set(b"c", Write::Set(b"xxxxx"), 0, 1), Err(Refused::Full));
        t.set(b"c", Write::Set(b"xy"), 0, 1).unwrap();
        assert!(t.del(b"a", 1));
        t.set(b"b", Write::Update(b"ABCDEFGHIJK"), 0, 1).unwrap();
        assert_eq!(t.get(b"b", 1).as_deref(), Some(&b"ABCDEFGHIJK"[..]));
        assert_eq!(t.get(b"c", 1).as_deref(), Some(&b"xy"[..]));
    }

    #[test]
    fn repair_keeps_items_and_drops_a_torn_one() {
        let g = geo(4, 8, false, 4);
        let mut buf = Vec::new();
        {
            let mut t = table(&mut buf, g, Policy::default());
            t.set(b"a", Write::Set(b"1"), 0, 1).unwrap();
            t.set(b"b", Write::Set(b"2"), 0, 1).unwrap();
            t.set(b"c", Write::Set(b"3"), 0, 1).unwrap();
            // A process dies while writing b's value.
            let i = t.find(b"b", 1).unwrap();
            t.begin(i);
        }
        let mut t = Table::new(&mut buf, g, Policy::default());
        assert_eq!(
            t.open(),
            Ok(Opened::Restored {
                items: 2,
                dropped: 1
            })
        );
        assert_eq!(t.keys(1), vec![b"a".to_vec(), b"c".to_vec()]);
        t.set(b"d", Write::Set(b"4"), 0, 1).unwrap();
        t.set(b"e", Write::Set(b"5"), 0, 1).unwrap();
        assert_eq!(t.figures().items, 4);
        let other = geo(4, 16, false, 4);
        buf.resize(other.len().unwrap(), 0);
        assert!(Table::new(&mut buf, other, Policy::default())
            .open()
            .is_err());
    }
}
