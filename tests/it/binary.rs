//! `Binary`: the real `stockpulse` binary as a child process on a free port, for the tests
//! that kill it, limit it or measure it apart from the test process.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support;

/// The real `stockpulse` binary on a free port.
pub(crate) struct Binary {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Binary {
    pub(crate) async fn start(data_dir: &std::path::Path) -> Binary {
        Binary::start_with(data_dir, &[], &[]).await
    }

    /// Starts the binary behind `wrapper` (e.g. `prlimit --fsize=N --`) with `extra` flags.
    pub(crate) async fn start_with(
        data_dir: &std::path::Path,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let binary = env!("CARGO_BIN_EXE_stockpulse");
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let binary = Binary {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        assert!(
            support::answers_within(&binary.base, Duration::from_secs(5)).await,
            "the server did not answer"
        );
        binary
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Binary {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// The server process's resident memory, in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub(crate) fn resident_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .expect("VmRSS")
            * 1024
    }
}
