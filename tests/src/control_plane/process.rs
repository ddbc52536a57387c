//! Child processes of the control plane: started with their output in a log
//! file, stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running server. Dropping it kills it (SIGKILL by PID) and reaps it.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `binary` with `args`; stdout and stderr go to `<logs>/<name>.log`.
    pub fn start(name: &str, binary: &Path, args: &[String], logs: &Path) -> Result<Process> {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", binary.display()))?;
        Ok(Process {
            name: name.to_string(),
            log,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time it has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        Ok(cpu_time(Path::new(&format!("/proc/{}/stat", self.pid())))?.1)
    }

    /// Fails with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name and CPU time (user + system) of the process or thread whose
/// `/proc/…/stat` is `stat`.
pub fn cpu_time(stat: &Path) -> Result<(String, Duration)> {
    let text =
        std::fs::read_to_string(stat).with_context(|| format!("cannot read {}", stat.display()))?;
    // `pid (comm) state …`: the name may hold spaces and parentheses.
    let (head, rest) = text
        .rsplit_once(')')
        .with_context(|| format!("{} has no `(comm)`", stat.display()))?;
    let name = head.split_once('(').map_or("", |(_, name)| name);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); `rest` starts at field 3.
    let ticks = |field: usize| -> Result<u64> {
        fields
            .get(field - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{} has no field {field}", stat.display()))
    };
    let ticks = ticks(14)? + ticks(15)?;
    Ok((name.to_string(), from_ticks(ticks)))
}

/// A `/proc` CPU time in clock ticks (USER_HZ, 100 on every Linux ABI).
pub fn from_ticks(ticks: u64) -> Duration {
    const TICKS_PER_SECOND: u64 = 100;
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The CPU time this process's live threads whose names start with
/// `prefix` have used so far.
pub fn own_threads_cpu_time(prefix: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread may end between the listing and the read.
        if let Ok((name, used)) = cpu_time(&task?.path().join("stat"))
            && name.starts_with(prefix)
        {
            total += used;
        }
    }
    Ok(total)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `ready` every 100 ms until it returns true, the process exits, or
/// `timeout` passes.
pub async fn wait_until<F, Fut>(
    process: &mut Process,
    timeout: Duration,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        process.check_running()?;
        if ready().await {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "{} was not ready within {timeout:?}; last lines of {}:\n{}",
                process.name,
                process.log.display(),
                tail(&process.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
