//! Zero-downtime upgrades on one host: a new gateway process takes the listening sockets
//! over from the running one, which then stops accepting and drains (AV-BCP-1).
//!
//! Why hand the sockets over rather than bind twice with `SO_REUSEPORT`: a listening
//! socket's queue of connections that completed the TCP handshake but were not yet
//! accepted belongs to that socket. When the old process closes its own `SO_REUSEPORT`
//! socket, Linux resets every connection still queued there (unless the host enables
//! `net.ipv4.tcp_migrate_req`). Passed over a Unix socket (`SCM_RIGHTS`), the very same
//! sockets, queues included, live on in the new process: nothing queued is lost, and
//! no address is ever unbound.
//!
//! The exchange, on `gateway.handover_socket` (a Unix socket, mode 0600, only the same
//! user may connect):
//! 1. the new process connects and sends `take v1`;
//! 2. the old one answers one JSON line (its listener names and addresses, its
//!    access-record chain and spool) with the listening sockets attached;
//! 3. the new one refuses if it would write the same chain or spool (two writers would
//!    break the hash chain: give each process its own `instance_id`, e.g. blue/green),
//!    else starts serving on the sockets and sends `ready`;
//! 4. the old one removes the socket file, closes the connection and drains as on
//!    SIGTERM; the new one then listens on the path for the next upgrade.
//!
//! If the new process fails before `ready` (a bad config, a missing key), the old one
//! notices the closed connection and keeps serving as if nothing happened.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most listening sockets one hand-over carries (listeners plus the admin listener).
const MAX_SOCKETS: usize = 32;
/// How long the old process waits for the new one to start serving.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long one step of the exchange may take otherwise.
const STEP_WITHIN: Duration = Duration::from_secs(10);
const REQUEST: &str = "take v1\n";
const READY: &str = "ready\n";

/// Why a hand-over could not happen. The new process refuses to start; the old one
/// keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The socket file exists and something answers there, but the exchange failed.
    #[error("hand-over through {path}: {step}: {source}")]
    Io {
        /// `gateway.handover_socket`.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The running gateway answered something that is not the hand-over protocol.
    #[error("hand-over through {path}: the running process answered {answer:?}, not a phr-gateway hand-over; check gateway.handover_socket")]
    Protocol {
        /// `gateway.handover_socket`.
        path: PathBuf,
        /// What it answered.
        answer: String,
    },
    /// Both processes would write the same access-record chain or spool file.
    #[error("hand-over refused: the running gateway also uses {what} {value:?}; two processes must not write one access-record chain or spool at once. Fix: give the new process its own gateway.instance_id and audit.spool_file (e.g. a blue/green slot: see deploy/README.md)")]
    SameChain {
        /// `instance_id` or `spool_file`.
        what: &'static str,
        /// The shared value.
        value: String,
    },
}

/// What the old process tells the new one, beside the sockets (in the same order).
#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    /// Listener names, then `admin` last when `has_admin`.
    listeners: Vec<String>,
    has_admin: bool,
    instance_id: String,
    spool_file: PathBuf,
}

/// The sockets a new process took over, and the line back to the old process.
pub struct Taken {
    path: PathBuf,
    listeners: Vec<(String, TcpListener)>,
    admin: Option<TcpListener>,
    line: UnixStream,
}

impl Taken {
    /// The taken socket of listener `name` if it is bound to `want` (port 0: any).
    pub fn listener(&mut self, name: &str, want: SocketAddr) -> Option<TcpListener> {
        let i = self
            .listeners
            .iter()
            .position(|(n, l)| n == name && same_address(l, want))?;
        Some(self.listeners.swap_remove(i).1)
    }

    /// The taken admin socket if it is bound to `want`.
    pub fn admin(&mut self, want: SocketAddr) -> Option<TcpListener> {
        match &self.admin {
            Some(l) if same_address(l, want) => self.admin.take(),
            _ => None,
        }
    }

    /// Tells the old process that this one serves, then waits until it has let go of the
    /// socket path (it closes the line), so that [`offer`] can bind it.
    pub fn confirm(mut self) -> Result<(), HandoverError> {
        let io = |step, source| HandoverError::Io {
            path: self.path.clone(),
            step,
            source,
        };
        self.line
            .write_all(READY.as_bytes())
            .map_err(|e| io("sending ready", e))?;
        self.line
            .set_read_timeout(Some(STEP_WITHIN))
            .map_err(|e| io("waiting for the old process", e))?;
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut self.line, &mut rest).map_err(|e| io("waiting for the old process", e))?;
        Ok(())
    }
}

fn same_address(l: &TcpListener, want: SocketAddr) -> bool {
    match l.local_addr() {
        Ok(have) if want.port() == 0 => have.ip() == want.ip(),
        Ok(have) => have == want,
        Err(_) => false,
    }
}

/// Takes the listening sockets over from the gateway serving on `path`, if one does.
/// `None` when nobody does (no file, or a stale file left by a killed process, which is
/// removed). Blocking: call it before the runtime's accept loops start.
pub fn take_over(path: &Path, instance_id: &str, spool_file: &Path) -> Result<Option<Taken>, HandoverError> {
    let io = |step, source| HandoverError::Io {
        path: path.to_path_buf(),
        step,
        source,
    };
    let mut line = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Left behind by a process that did not exit cleanly.
            std::fs::remove_file(path).map_err(|e| io("removing a stale socket file", e))?;
            return Ok(None);
        }
        Err(e) => return Err(io("connecting", e)),
    };
    line.set_read_timeout(Some(STEP_WITHIN))
        .map_err(|e| io("connecting", e))?;
    line.write_all(REQUEST.as_bytes())
        .map_err(|e| io("asking for the sockets", e))?;
    let (text, fds) = receive_with_fds(&line).map_err(|e| io("receiving the sockets", e))?;
    let offer: Offer = serde_json::from_str(text.trim_end()).map_err(|_| HandoverError::Protocol {
        path: path.to_path_buf(),
        answer: text.chars().take(100).collect(),
    })?;
    if offer.instance_id == instance_id {
        return Err(HandoverError::SameChain {
            what: "instance_id",
            value: instance_id.to_string(),
        });
    }
    if offer.spool_file == spool_file {
        return Err(HandoverError::SameChain {
            what: "spool_file",
            value: spool_file.display().to_string(),
        });
    }
    let expected = offer.listeners.len() + usize::from(offer.has_admin);
    if fds.len() != expected {
        return Err(HandoverError::Protocol {
            path: path.to_path_buf(),
            answer: format!("{} sockets for {expected} listeners", fds.len()),
        });
    }
    let mut sockets = fds.into_iter().map(TcpListener::from);
    let listeners = offer.listeners.into_iter().zip(sockets.by_ref()).collect();
    let admin = if offer.has_admin { sockets.next() } else { None };
    Ok(Some(Taken {
        path: path.to_path_buf(),
        listeners,
        admin,
        line,
    }))
}

/// Reads one line of text and the file descriptors sent with it.
fn receive_with_fds(line: &UnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut text = vec![0u8; 64 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        line,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    text.truncate(got.bytes);
    Ok((String::from_utf8_lossy(&text).into_owned(), fds))
}

/// The running process's side: what it offers, and how it learns it was taken over.
pub struct Offering {
    /// Listener names and their sockets (duplicates of the ones being served).
    pub listeners: Vec<(String, TcpListener)>,
    /// The admin listener's socket.
    pub admin: Option<TcpListener>,
    /// This process's access-record chain.
    pub instance_id: String,
    /// This process's spool file.
    pub spool_file: PathBuf,
}

/// Listens on `path`, mode 0600. A file left there by a process that did not exit
/// cleanly is replaced; a path another process still serves on is an error.
pub fn bind(path: &Path) -> Result<UnixListener, HandoverError> {
    let io = |step, source| HandoverError::Io {
        path: path.to_path_buf(),
        step,
        source,
    };
    if UnixStream::connect(path).is_ok() {
        return Err(io(
            "listening",
            std::io::Error::new(std::io::ErrorKind::AddrInUse, "another process serves on this path"),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| io("listening", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io("listening", e))?;
    Ok(listener)
}

/// Hands `offering` to the first process of the same user that asks on `listener` (bound
/// to `path` by [`bind`]) and then confirms it serves. Returns once that happened, after
/// the socket file is removed: the caller then drains. Runs on a blocking thread.
pub fn offer(listener: UnixListener, path: &Path, offering: Offering) -> Result<(), HandoverError> {
    let io = |step, source| HandoverError::Io {
        path: path.to_path_buf(),
        step,
        source,
    };
    loop {
        let (mut line, _) = listener.accept().map_err(|e| io("accepting", e))?;
        match serve_one(&mut line, &offering) {
            Ok(true) => {
                // Let go of the path before the new process binds it.
                let _ = std::fs::remove_file(path);
                drop(listener);
                drop(line);
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "a hand-over did not complete; still serving"),
        }
    }
}

/// One exchange: `Ok(true)` when the other process took the sockets and serves.
fn serve_one(line: &mut UnixStream, offering: &Offering) -> std::io::Result<bool> {
    // Only the gateway's own user may take its sockets (the file mode says so too).
    let peer = rustix::net::sockopt::socket_peercred(line.as_fd())?;
    if peer.uid != rustix::process::geteuid() {
        tracing::warn!(uid = peer.uid.as_raw(), "hand-over refused to another user");
        return Ok(false);
    }
    line.set_read_timeout(Some(STEP_WITHIN))?;
    let mut reader = BufReader::new(line.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    if request != REQUEST {
        return Ok(false);
    }
    let text = serde_json::to_string(&Offer {
        listeners: offering.listeners.iter().map(|(n, _)| n.clone()).collect(),
        has_admin: offering.admin.is_some(),
        instance_id: offering.instance_id.clone(),
        spool_file: offering.spool_file.clone(),
    })? + "\n";
    let fds: Vec<_> = offering
        .listeners
        .iter()
        .map(|(_, l)| l.as_fd())
        .chain(offering.admin.iter().map(|l| l.as_fd()))
        .collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("too many listeners to hand over"));
    }
    rustix::net::sendmsg(
        &*line,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    // The new process may take a while to load keys and open the store.
    line.set_read_timeout(Some(READY_WITHIN))?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    Ok(answer == READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(dir: &Path, instance: &str) -> (Offering, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let o = Offering {
            listeners: vec![("public".into(), l)],
            admin: Some(TcpListener::bind("127.0.0.1:0").unwrap()),
            instance_id: instance.into(),
            spool_file: dir.join(format!("{instance}.spool")),
        };
        (o, addr)
    }

    fn wait_for(path: &Path) {
        for _ in 0..200 {
            if path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} never appeared", path.display());
    }

    #[test]
    fn nobody_there_is_no_hand_over_and_a_stale_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        assert!(take_over(&path, "b", &dir.path().join("b.spool")).unwrap().is_none());
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(take_over(&path, "b", &dir.path().join("b.spool")).unwrap().is_none());
        assert!(!path.exists(), "the stale socket file was left");
    }

    #[test]
    fn the_same_socket_moves_and_keeps_its_queued_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let (o, addr) = offering(dir.path(), "blue");
        let old = std::thread::spawn({
            let path = path.clone();
            let listener = bind(&path).unwrap();
            move || offer(listener, &path, o)
        });
        wait_for(&path);
        // A connection the old process never accepted: queued in the socket.
        let mut queued = std::net::TcpStream::connect(addr).unwrap();
        let mut taken = take_over(&path, "green", &dir.path().join("green.spool"))
            .unwrap()
            .expect("a running offer");
        let moved = taken.listener("public", addr).expect("the public listener");
        assert!(taken.listener("public", addr).is_none(), "handed out twice");
        assert!(taken.admin("127.0.0.1:0".parse().unwrap()).is_some());
        taken.confirm().unwrap();
        old.join().unwrap().unwrap();
        assert!(!path.exists(), "the old process kept the path");
        // The queued connection is accepted by the new owner of the socket.
        let (mut accepted, _) = moved.accept().unwrap();
        queued.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut accepted, &mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn the_same_chain_is_refused_and_the_old_process_keeps_offering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let (o, addr) = offering(dir.path(), "blue");
        let spool = o.spool_file.clone();
        let old = std::thread::spawn({
            let path = path.clone();
            let listener = bind(&path).unwrap();
            move || offer(listener, &path, o)
        });
        wait_for(&path);
        let e = take_over(&path, "blue", &dir.path().join("other.spool")).err().unwrap();
        assert!(
            matches!(
                e,
                HandoverError::SameChain {
                    what: "instance_id",
                    ..
                }
            ),
            "{e}"
        );
        let e = take_over(&path, "green", &spool).err().unwrap();
        assert!(matches!(e, HandoverError::SameChain { what: "spool_file", .. }), "{e}");
        // A process that gives up before `ready` leaves the old one serving and offering.
        drop(take_over(&path, "green", &dir.path().join("g.spool")).unwrap().unwrap());
        let mut taken = take_over(&path, "green", &dir.path().join("g.spool")).unwrap().unwrap();
        assert!(taken.listener("public", addr).is_some());
        taken.confirm().unwrap();
        old.join().unwrap().unwrap();
    }
}
