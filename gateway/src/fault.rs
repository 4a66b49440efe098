//! Fault injection for the end-to-end tests, compiled into debug builds only.
//!
//! The tests prove that a panic inside a phase becomes that request's 500 with an access
//! record (see `Pipeline::handle`); they need a real panic in the real binary to prove it.
//! Release builds compile [`inject_panic`] to nothing, so no setting can reach it there.

/// Panics when the request path starts with one of the comma-separated prefixes in
/// `PHR_GATEWAY_TEST_PANIC_ON_PATH` (debug builds).
#[cfg(debug_assertions)]
pub(crate) fn inject_panic(path: &str) {
    static PREFIXES: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var("PHR_GATEWAY_TEST_PANIC_ON_PATH").ok());
    if let Some(prefixes) = PREFIXES.as_deref() {
        if prefixes.split(',').any(|p| path.starts_with(p)) {
            panic!("injected panic for {path} (PHR_GATEWAY_TEST_PANIC_ON_PATH)");
        }
    }
}

/// Release builds: nothing to inject.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn inject_panic(_path: &str) {}
