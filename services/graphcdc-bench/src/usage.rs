//! CPU time and resident memory of this process, from `/proc` (Linux; zeros elsewhere).
//!
//! CPU is the whole process's user + system time (`/proc/self/stat`, exited threads
//! included), with a breakdown per thread name (`/proc/self/task/*/stat`, live threads
//! only) so the processor's tokio workers and librdkafka threads can be told from the
//! rest. Memory is `VmRSS` sampled over time, after returning freed heap to the kernel
//! (`malloc_trim`) so a baseline does not hide reusable free memory.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU time used so far: the process total and per thread-name group.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    pub total: Duration,
    pub by_thread: BTreeMap<String, Duration>,
}

/// User + system time from the text of a `/proc/.../stat` file.
fn stat_cpu(stat: &str) -> Duration {
    // The command name (field 2) may hold spaces: fields count from after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file: 11 and 12 after the ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_S)
}

/// A thread's name with digits dropped (`rdk:broker3` → `rdk:broker`).
fn thread_group(comm: &str) -> String {
    comm.trim()
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

impl CpuSnapshot {
    /// The CPU time this process has used so far.
    pub fn now() -> Self {
        let total = stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
        let mut by_thread = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let cpu = stat_cpu(&std::fs::read_to_string(path.join("stat")).unwrap_or_default());
                *by_thread.entry(thread_group(&comm)).or_default() += cpu;
            }
        }
        CpuSnapshot { total, by_thread }
    }

    /// CPU used since `earlier`: the total, and the thread groups that used at least
    /// 1 % of it, largest first, as `name 12 %` text.
    pub fn since(&self, earlier: &CpuSnapshot) -> (Duration, String) {
        let total = self.total.saturating_sub(earlier.total);
        let mut groups: Vec<(String, Duration)> = self
            .by_thread
            .iter()
            .map(|(name, cpu)| {
                let before = earlier.by_thread.get(name).copied().unwrap_or_default();
                (name.clone(), cpu.saturating_sub(before))
            })
            .filter(|(_, cpu)| cpu.as_secs_f64() >= total.as_secs_f64() * 0.01)
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        let text = groups
            .iter()
            .map(|(name, cpu)| {
                format!(
                    "{name} {:.0} %",
                    100.0 * cpu.as_secs_f64() / total.as_secs_f64().max(1e-9)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        (total, text)
    }
}

/// Return freed heap to the kernel (glibc `malloc_trim`), so RSS measures live memory.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Median and maximum of `samples` (0 for none).
pub fn median_max(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "42 (tokio worker) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(stat_cpu(stat), Duration::from_secs(3));
        assert_eq!(thread_group("rdk:broker12\n"), "rdk:broker");
    }
}
