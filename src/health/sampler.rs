//! System samples from sysinfo. `sample` blocks (it reads /proc and
//! statvfs), so callers run it on a blocking thread, never on the engine's
//! or the console's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::event::ProcessFigures;
pub use crate::event::SystemSample;
use sysinfo::{CpuRefreshKind, Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

pub struct Sampler {
    sys: System,
    disks: Disks,
    nets: Networks,
    pid: Option<Pid>,
    data_dir: PathBuf,
    last_net: Instant,
    started: Instant,
}

impl Sampler {
    pub fn new(data_dir: &Path) -> Sampler {
        let mut s = Sampler {
            sys: System::new(),
            disks: Disks::new_with_refreshed_list(),
            nets: Networks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
            data_dir: data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf()),
            last_net: Instant::now(),
            started: Instant::now(),
        };
        // CPU usage is a difference between two readings: take the first now.
        s.sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        s
    }

    pub fn sample(&mut self) -> SystemSample {
        self.sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        self.sys.refresh_memory();
        if let Some(pid) = self.pid {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
        }
        let (disk_used, disk_total) = self.disk_space();
        self.nets.refresh(true);
        let elapsed = self.last_net.elapsed().as_secs_f64().max(0.001);
        self.last_net = Instant::now();
        let (rx, tx) = self.nets.iter().fold((0u64, 0u64), |(r, t), (_, d)| (r + d.received(), t + d.transmitted()));
        let process = self.pid.and_then(|p| self.sys.process(p));
        let load = System::load_average();
        SystemSample {
            cpu: self.sys.global_cpu_usage(),
            cpus: self.sys.cpus().iter().map(|c| c.cpu_usage()).collect(),
            memory_used: self.sys.used_memory(),
            memory_total: self.sys.total_memory(),
            swap_used: self.sys.used_swap(),
            swap_total: self.sys.total_swap(),
            disk_used,
            disk_total,
            net_rx_per_s: (rx as f64 / elapsed) as u64,
            net_tx_per_s: (tx as f64 / elapsed) as u64,
            process_cpu: process.map_or(0.0, |p| p.cpu_usage()),
            process_rss: process.map_or(0, |p| p.memory()),
            uptime_secs: self.started.elapsed().as_secs(),
            load: [load.one, load.five, load.fifteen],
            process: process.map_or_else(ProcessFigures::default, |p| ProcessFigures {
                cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
                virtual_memory: p.virtual_memory(),
                open_fds: p.open_files().map_or(0, |n| n as u64),
                max_fds: p.open_files_limit().map_or(0, |n| n as u64),
                start_time: i64::try_from(p.start_time()).unwrap_or(0),
            }),
        }
    }

    /// Used and usable bytes of the data directory's filesystem.
    fn disk_space(&mut self) -> (u64, u64) {
        #[cfg(unix)]
        if let Ok(v) = rustix::fs::statvfs(&self.data_dir) {
            // sysinfo has no count of free blocks, only of available ones, so
            // its figure would count root's reserve as used: 88% on a disk
            // that `df` shows at 68%, and a disk alert that `df` contradicts.
            return df_space(v.f_blocks, v.f_bfree, v.f_bavail, v.f_frsize);
        }
        self.disks.refresh(false);
        // The disk whose mount point is the longest prefix of the data directory.
        let disk = self
            .disks
            .iter()
            .filter(|d| self.data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        disk.map_or((0, 0), |d| (d.total_space().saturating_sub(d.available_space()), d.total_space()))
    }
}

/// `df`'s arithmetic from statvfs block counts: used is what is not free,
/// and the whole is used plus what an ordinary user may still write.
#[cfg_attr(not(unix), allow(dead_code))]
fn df_space(blocks: u64, free: u64, available: u64, block_size: u64) -> (u64, u64) {
    let used = blocks.saturating_sub(free).saturating_mul(block_size);
    (used, used.saturating_add(available.saturating_mul(block_size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sampler::new(dir.path());
        let x = s.sample();
        assert!(x.memory_total > 0 && x.memory_used <= x.memory_total);
        assert!(x.disk_total > 0, "the data directory's filesystem was not found");
        assert!(!x.cpus.is_empty());
        assert!(x.process_rss > 0);
        #[cfg(target_os = "linux")]
        {
            // The test harness holds at least stdin, stdout and stderr.
            assert!(x.process.open_fds >= 3 && x.process.max_fds >= x.process.open_fds, "{:?}", x.process);
            let now = chrono::Utc::now().timestamp();
            assert!((now - 86_400..=now).contains(&x.process.start_time), "{:?}", x.process);
            assert!(x.process.virtual_memory >= x.process_rss);
        }
        assert!((0.0..=100.0).contains(&x.memory_pct()));
    }

    #[test]
    fn reserved_blocks_are_neither_used_nor_usable() {
        // 100 blocks of 4 KiB, 40 free of which 5 are root's reserve.
        let (used, total) = df_space(100, 40, 35, 4096);
        assert_eq!((used, total), (60 * 4096, 95 * 4096));
        assert_eq!(df_space(0, 0, 0, 4096), (0, 0));
    }

    /// The disk gauge agrees with `df` on the data directory's filesystem.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_disk_figure_is_the_one_df_shows() {
        let dir = tempfile::tempdir().unwrap();
        let x = Sampler::new(dir.path()).sample();
        let out = std::process::Command::new("df").args(["--output=pcent"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let df: f64 = text.lines().nth(1).unwrap().trim().trim_end_matches('%').parse().unwrap();
        // df rounds up to a whole percent; other writers may move it a little between the two reads.
        assert!((x.disk_pct() - df).abs() <= 1.5, "pipwatch {:.1}%, df {df}%", x.disk_pct());
    }
}
