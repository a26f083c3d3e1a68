//! Figures of a running process from `/proc` (Linux).

use std::io;

/// A `/proc/<pid>/status` field counted in KiB (`VmRSS`, `VmHWM`, ...), or
/// `None` if the process is gone or has no such field.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    status_field(pid, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A `/proc/<pid>/status` field's value, trimmed.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// The most resident memory the process has had (`VmHWM`), in KiB: since it
/// started, or since the last [`reset_peak_rss`].
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Start [`peak_rss_kib`] afresh from the current RSS (writes `5` to
/// `/proc/<pid>/clear_refs`, Linux 4.0 and later; the caller must own the
/// process), so that one phase of a test gets its own peak.
pub fn reset_peak_rss(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The lowest [`rss_kib`] seen over `watch` (sampled every 20 ms): what the
/// process holds once the last requests' short-lived buffers are freed, which
/// a single reading right after them may still include.
pub fn settled_rss_kib(pid: u32, watch: std::time::Duration) -> Option<u64> {
    let watch_until = std::time::Instant::now() + watch;
    let mut lowest = rss_kib(pid)?;
    while std::time::Instant::now() < watch_until {
        std::thread::sleep(std::time::Duration::from_millis(20));
        lowest = lowest.min(rss_kib(pid)?);
    }
    Some(lowest)
}

/// Threads of the process.
pub fn threads(pid: u32) -> Option<usize> {
    status_field(pid, "Threads")?.parse().ok()
}

/// Socket file descriptors the process holds.
pub fn socket_fds(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_threads_and_a_resettable_peak() {
        let pid = std::process::id();
        let rss = rss_kib(pid).expect("VmRSS");
        assert!(rss > 0);
        assert!(peak_rss_kib(pid).expect("VmHWM") >= rss);
        assert!(threads(pid).expect("Threads") >= 1);
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(socket_fds(pid).expect("fd table") >= 1);
        reset_peak_rss(pid).expect("clear_refs");
        assert!(peak_rss_kib(pid).is_some());
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
