//! Small helpers that several modules need in exactly one form.
//!
//! Each of these once existed two to five times with slightly different
//! behaviour (issue 18, "one of each"): the clock read as Unix time, the
//! redaction of a password in a connection URL, and the `*.example.jp`
//! host match shared by routes and TLS certificate selection. Keeping one
//! copy means a fix or a stricter rule reaches every caller at once.
//! `wake_gate` is the one task-polling helper the connection loop needs, kept
//! out of `server/` so that it stays about connections.

pub mod clock;
pub mod host;
pub mod redact;
pub mod wake_gate;
