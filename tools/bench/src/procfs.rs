//! Samples of `/proc`: the load average and a process's CPU time (`/proc/<pid>/stat`), so a
//! run can report how much of a core the server used. Linux only; on failure the numbers are
//! simply left out. (Syscall counts come from `perf stat` in the script: `/proc/<pid>/io`
//! counts `read`/`write` but not `recv`/`send`/`sendmsg`, which tokio and memcached use.)

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU and syscall counters of one process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    user_ticks: u64,
    sys_ticks: u64,
}

/// Reads the counters of `pid` (`None` = this process). `None` when `/proc` is unreadable.
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let (user_ticks, sys_ticks) = parse_stat_times(&stat)?;
    Some(Sample {
        at: Instant::now(),
        user_ticks,
        sys_ticks,
    })
}

/// What happened between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    /// User CPU seconds per wall second.
    pub cpu_user: f64,
    /// System CPU seconds per wall second.
    pub cpu_sys: f64,
}

impl Sample {
    /// The change from `self` to `later`.
    pub fn delta(&self, later: &Sample) -> Delta {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SEC / wall;
        Delta {
            cpu_user: per_sec(self.user_ticks, later.user_ticks),
            cpu_sys: per_sec(self.sys_ticks, later.sys_ticks),
        }
    }
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces, so fields are counted after its closing parenthesis.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The one-minute load average.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_spaces_in_the_name() {
        let line = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 37 0 0 20 0 1 0";
        assert_eq!(parse_stat_times(line), Some((250, 37)));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let a = sample(None).unwrap();
        let b = sample(None).unwrap();
        let d = a.delta(&b);
        assert!(d.cpu_user >= 0.0 && d.cpu_sys >= 0.0);
    }
}
