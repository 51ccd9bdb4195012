"""The `uwsgi` module: caches, shared areas and locks (uWSGI 2.0's names and return values).

The work is done in Rust (``headrace._headrace``, ``src/offload/cache.rs``): the caches, shared
areas and locks live in shared memory the master made before it forked, so every worker, mule
and spooler sees the same ones. Keys and values may be ``str`` (UTF-8) or ``bytes``; values
come back as ``bytes``. As in uWSGI, a call that cannot be done answers ``None`` (not
``False``): ``cache_set`` of an existing key, a value larger than the cache's blocks, a full
cache, an unknown cache name.
"""

from headrace import _headrace as _h

__all__ = [
    "cache_clear",
    "cache_dec",
    "cache_del",
    "cache_div",
    "cache_exists",
    "cache_get",
    "cache_inc",
    "cache_keys",
    "cache_mul",
    "cache_num",
    "cache_set",
    "cache_update",
    "is_locked",
    "lock",
    "sharedarea_dec32",
    "sharedarea_dec64",
    "sharedarea_inc32",
    "sharedarea_inc64",
    "sharedarea_inclong",
    "sharedarea_memoryview",
    "sharedarea_read",
    "sharedarea_read8",
    "sharedarea_read16",
    "sharedarea_read32",
    "sharedarea_read64",
    "sharedarea_readbyte",
    "sharedarea_readlong",
    "sharedarea_rlock",
    "sharedarea_unlock",
    "sharedarea_wlock",
    "sharedarea_write",
    "sharedarea_write8",
    "sharedarea_write16",
    "sharedarea_write32",
    "sharedarea_write64",
    "sharedarea_writebyte",
    "sharedarea_writelong",
    "unlock",
]
DECORATORS = ["lock"]

cache_get = _h.cache_get
cache_set = _h.cache_set
cache_update = _h.cache_update
cache_del = _h.cache_del
cache_exists = _h.cache_exists
cache_clear = _h.cache_clear
cache_keys = _h.cache_keys
cache_num = _h.cache_num


cache_inc = _h.cache_inc
cache_dec = _h.cache_dec
cache_mul = _h.cache_mul
cache_div = _h.cache_div

sharedarea_read = _h.sharedarea_read
sharedarea_write = _h.sharedarea_write
sharedarea_memoryview = _h.sharedarea_memoryview


def sharedarea_read8(id, pos):
    """The signed byte at ``pos``."""
    return _h.sharedarea_readint(id, pos, 1)


def sharedarea_read16(id, pos):
    """The signed 16-bit number at ``pos`` (native byte order)."""
    return _h.sharedarea_readint(id, pos, 2)


def sharedarea_read32(id, pos):
    """The signed 32-bit number at ``pos``."""
    return _h.sharedarea_readint(id, pos, 4)


def sharedarea_read64(id, pos):
    """The signed 64-bit number at ``pos``."""
    return _h.sharedarea_readint(id, pos, 8)


def sharedarea_write8(id, pos, value):
    """Store the low byte of ``value`` at ``pos``."""
    _h.sharedarea_writeint(id, pos, 1, value)


def sharedarea_write16(id, pos, value):
    """Store the low 16 bits of ``value`` at ``pos``."""
    _h.sharedarea_writeint(id, pos, 2, value)


def sharedarea_write32(id, pos, value):
    """Store the low 32 bits of ``value`` at ``pos``."""
    _h.sharedarea_writeint(id, pos, 4, value)


def sharedarea_write64(id, pos, value):
    """Store ``value`` as a 64-bit number at ``pos``."""
    _h.sharedarea_writeint(id, pos, 8, value)


def sharedarea_inc32(id, pos, value=1):
    """Add ``value`` to the 32-bit number at ``pos``, under the area's lock."""
    _h.sharedarea_add(id, pos, 4, value)


def sharedarea_inc64(id, pos, value=1):
    """Add ``value`` to the 64-bit number at ``pos``, under the area's lock."""
    _h.sharedarea_add(id, pos, 8, value)


def sharedarea_dec32(id, pos, value=1):
    """Subtract ``value`` from the 32-bit number at ``pos``."""
    _h.sharedarea_add(id, pos, 4, -value)


def sharedarea_dec64(id, pos, value=1):
    """Subtract ``value`` from the 64-bit number at ``pos``."""
    _h.sharedarea_add(id, pos, 8, -value)


def sharedarea_rlock(id):
    """Take the area's app lock (one mutex: readers exclude each other too)."""
    _h.sharedarea_lock(id, True)


def sharedarea_wlock(id):
    """Take the area's app lock."""
    _h.sharedarea_lock(id, True)


def sharedarea_unlock(id):
    """Release the area's app lock."""
    _h.sharedarea_lock(id, False)


sharedarea_readbyte = sharedarea_read8
sharedarea_writebyte = sharedarea_write8
sharedarea_readlong = sharedarea_read64
sharedarea_writelong = sharedarea_write64
sharedarea_inclong = sharedarea_inc64


class _Lock:
    """``uwsgi.lock`` is both the function ``lock(n=0)`` and, in ``uwsgidecorators``, the
    decorator ``@lock`` (which holds lock 0 around the call, and does nothing in the spooler,
    as uWSGI's)."""

    __slots__ = ()

    def __call__(self, n=0):
        if callable(n):
            return _locked(n)
        return _h.user_lock(n)


def _locked(f):
    import functools

    @functools.wraps(f)
    def _lock(*args, **kwargs):
        role = _h.role()
        if role is not None and role[0] == "spooler":
            return None
        _h.user_lock(0)
        try:
            return f(*args, **kwargs)
        finally:
            _h.user_unlock(0)

    return _lock


lock = _Lock()
unlock = _h.user_unlock
is_locked = _h.user_is_locked
