//! Wall-clock formatting helpers that need libc's local time.

/// Format a Unix time as ctime(3) does, without the newline: `Thu Apr 11 05:04:21 2024`
/// (24 characters, local time), the date field of uWSGI's request log line.
#[must_use]
pub fn ctime(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: tm is plain data.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: both pointers are valid; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&raw const t, &raw mut tm) }.is_null() {
        return "Thu Jan  1 00:00:00 1970".to_owned();
    }
    let day = DAYS[usize::try_from(tm.tm_wday).unwrap_or(0) % 7];
    let month = MONTHS[usize::try_from(tm.tm_mon).unwrap_or(0) % 12];
    format!(
        "{day} {month} {:>2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

/// Format a Unix time with strftime(3) in local time (uWSGI's `%(ltime)`, `%(ftime)` and
/// `--log-date=FORMAT`). Like uWSGI's 64-byte buffer, an expansion longer than 63 bytes (or a
/// format strftime rejects) gives an empty string.
#[must_use]
pub fn strftime(format: &str, secs: i64) -> String {
    let Ok(cfmt) = std::ffi::CString::new(format) else {
        return String::new();
    };
    // SAFETY: tm is plain data.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: both pointers are valid; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&raw const t, &raw mut tm) }.is_null() {
        return String::new();
    }
    let mut buf = [0u8; 64];
    // SAFETY: buf is writable for its length, cfmt is NUL-terminated and tm was filled above;
    // strftime writes at most buf.len() bytes and returns how many (0 when it did not fit).
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
            cfmt.as_ptr(),
            &raw const tm,
        )
    };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}
