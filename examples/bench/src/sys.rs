//! Process measurements: our own CPU time, and a broker's CPU time and RSS from /proc.

/// CPU seconds (user + system) used by this process so far.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct; RUSAGE_SELF is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds (utime + stime, all threads) of process `pid`, from /proc/PID/stat.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// Resident set size of process `pid` in bytes (VmRSS in /proc/PID/status).
pub fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises the open-files limit to at least `want` if allowed (root may raise the hard
/// limit too), else as far as the hard limit goes.
pub fn raise_nofile_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A CPU snapshot of ourselves and, if known, the broker.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    pub own: f64,
    pub broker: Option<f64>,
}

impl CpuMark {
    /// Own CPU and that of the broker's processes together (None without
    /// any, or when one cannot be read).
    pub fn now(broker_pids: &[u32]) -> CpuMark {
        let broker = if broker_pids.is_empty() {
            None
        } else {
            broker_pids
                .iter()
                .map(|pid| proc_cpu_secs(*pid))
                .sum::<Option<f64>>()
        };
        CpuMark {
            own: own_cpu_secs(),
            broker,
        }
    }

    /// (own, broker) CPU seconds from `self` to `later`.
    pub fn until(&self, later: &CpuMark) -> (f64, Option<f64>) {
        let broker = match (self.broker, later.broker) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        (later.own - self.own, broker)
    }
}
