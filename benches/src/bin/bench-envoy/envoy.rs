//! One Envoy process for the benchmark: pinned to a core, `--concurrency 1`,
//! static listeners from a JSON bootstrap; its CPU time and resident memory
//! read from /proc.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Envoy {
    child: Child,
    /// The Envoy process itself (not a wrapper such as func-e).
    pub pid: u32,
    pub admin_port: u16,
    log: PathBuf,
    pub startup: Duration,
}

/// Pins the calling thread (and threads it spawns later) to `cpu`.
pub fn pin_self(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Raises the calling thread's scheduling priority (nice -10) so that other
/// work on a shared machine steals less of the measured cores; threads
/// spawned later inherit it. Best effort: refused without the privilege.
pub fn raise_priority() -> bool {
    // SAFETY: setpriority on the calling thread only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) == 0 }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn version(command: &[String]) -> String {
    let out = Command::new(&command[0])
        .args(&command[1..])
        .arg("--version")
        .output();
    let text = match out {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => return format!("unknown ({e})"),
    };
    // "... version: <hash>/1.40.0/Clean/RELEASE/BoringSSL"
    text.split("version:")
        .nth(1)
        .map(|v| v.trim().lines().next().unwrap_or("").to_string())
        .unwrap_or_else(|| text.trim().to_string())
}

impl Envoy {
    /// Starts Envoy on `bootstrap` (a JSON file), pinned to `cpu` (if any),
    /// and waits until the admin says LIVE and every port in `ports` accepts.
    pub fn start(
        command: &[String],
        dir: &Path,
        bootstrap: &Path,
        concurrency: u32,
        cpu: Option<usize>,
        ports: &[u16],
        base_id: u32,
    ) -> Result<Envoy, String> {
        let admin_path = dir.join(format!("admin-{base_id}.address"));
        let _ = fs::remove_file(&admin_path);
        let log = dir.join(format!("envoy-{base_id}.log"));
        let log_file =
            fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log2 = log_file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .arg("-c")
            .arg(bootstrap)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log2));
        if let Some(cpu) = cpu {
            // SAFETY: sched_setaffinity is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    pin_self(cpu);
                    raise_priority();
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| format!("run {command:?}: {e}"))?;
        let mut envoy = Envoy {
            pid: child.id(),
            child,
            admin_port: 0,
            log,
            startup: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!(
                    "Envoy exited ({status}) while starting:\n{}",
                    envoy.log_tail(30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after 180 s:\n{}",
                    envoy.log_tail(30)
                ));
            }
            if envoy.admin_port == 0 {
                envoy.admin_port = fs::read_to_string(&admin_path)
                    .ok()
                    .and_then(|s| s.trim().rsplit(':').next()?.parse().ok())
                    .unwrap_or(0);
            }
            if envoy.admin_port != 0
                && admin_get(envoy.admin_port, "/ready").is_ok_and(|(s, _)| s == 200)
                && ports
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy.startup = started.elapsed();
        envoy.pid = find_envoy(envoy.child.id());
        Ok(envoy)
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// utime + stime of the Envoy process, all threads.
    pub fn cpu(&self) -> Duration {
        proc_cpu(self.pid)
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the ")" that ends comm: state is field 3; utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks())
}

/// The pid of Envoy itself: `pid`, or its descendant named envoy when `pid`
/// is a launcher (func-e, env).
fn find_envoy(pid: u32) -> u32 {
    let comm = |p: u32| fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    if comm(pid).trim() == "envoy" {
        return pid;
    }
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        let children =
            fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            if comm(c).trim() == "envoy" {
                return c;
            }
            frontier.push(c);
        }
    }
    pid
}

/// A GET on the admin interface: (status, body).
pub fn admin_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
