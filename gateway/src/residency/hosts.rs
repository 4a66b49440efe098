//! A hosts file the resolver consults before DNS, re-read when it changes.
//!
//! Operators use it to pin upstream names to known domestic addresses without trusting
//! the resolver; tests use it to move a name to another address while the gateway runs
//! and show that the next connection is checked against the new answer (DATA-JP-1).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

type Pins = HashMap<String, Vec<IpAddr>>;

/// The parsed file and the modification time it was read at.
pub struct HostsFile {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Pins)>,
}

impl HostsFile {
    /// Watches `path`; nothing is read until the first lookup, and a missing file pins
    /// nothing.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            state: Mutex::new((None, HashMap::new())),
        }
    }

    /// The addresses pinned for `host`, re-reading the file if it changed. An unreadable
    /// file pins nothing (DNS is then used, and its answer is still policy-checked).
    pub fn lookup(&self, host: &str) -> Option<Vec<IpAddr>> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != modified {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            *state = (modified, parse(&text));
        }
        state.1.get(&host.trim_end_matches('.').to_ascii_lowercase()).cloned()
    }
}

/// "IP name [name...]" per line, `#` comments; lines that do not parse are skipped.
fn parse(text: &str) -> Pins {
    let mut map = Pins::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in words {
            map.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_when_changed() {
        let dir = std::env::temp_dir().join(format!("phr-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(&path, "127.0.0.1 fhir.test other.test # comment\n").unwrap();
        let hosts = HostsFile::new(&path);
        assert_eq!(hosts.lookup("FHIR.test."), Some(vec!["127.0.0.1".parse().unwrap()]));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "127.0.0.2 fhir.test\n").unwrap();
        // Force a different mtime even on coarse filesystems.
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(hosts.lookup("fhir.test"), Some(vec!["127.0.0.2".parse().unwrap()]));
        assert_eq!(hosts.lookup("other.test"), None);
    }
}
