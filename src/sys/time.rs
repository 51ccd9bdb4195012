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
