//! Failpoints at persistence steps (etcd's gofail, through the `fail`
//! crate), compiled in only with the `failpoints` cargo feature; without it
//! every call is an empty inline function. Configured at run time by the
//! `FAILPOINTS` environment variable (`name=action;...`, fail's syntax).
//! Besides fail's own actions (`sleep(ms)`, `delay(ms)`, `panic`, `N*off->`
//! chains), `return(crash)` kills the process with SIGKILL right at the
//! step (a `kill -9` there) and `return(eio)` makes a step that can fail
//! fail with EIO. Names and places: docs/reliability.md.

/// At a step that can fail: `Some(EIO)` when injected.
#[cfg(feature = "failpoints")]
pub fn io_error(name: &str) -> Option<std::io::Error> {
    let arg = fail::eval(name, |a| a)?;
    if arg.as_deref() == Some("eio") {
        return Some(std::io::Error::from_raw_os_error(libc::EIO));
    }
    // SAFETY: kill(2) on our own pid. SIGKILL cannot be caught or ignored and
    // a signal sent to oneself is delivered before kill returns.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL sent to self at failpoint {name}")
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn io_error(_name: &str) -> Option<std::io::Error> {
    None
}

/// At a step that cannot fail: crash, sleep or delay when injected.
#[inline(always)]
pub fn hit(name: &str) {
    let _ = io_error(name);
}
