//! Running the gateway binary's commands to completion.

use std::path::Path;
use std::process::Command;

/// How a command ended: whether it succeeded, and what it wrote.
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin` with `args` until it exits.
pub fn run(bin: &str, args: &[&str]) -> Outcome {
    let out = Command::new(bin).args(args).output().unwrap();
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `bin check-config --config config`.
pub fn check_config(bin: &str, config: &Path) -> Outcome {
    run(bin, &["check-config", "--config", config.to_str().unwrap()])
}
