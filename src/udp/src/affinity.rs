//! CPU pinning for worker threads.
//!
//! Owns the one syscall that binds the calling thread to a core. It must never be called on
//! the per-packet path: workers call it once, when they start.

use std::io;

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: cpu_set_t is plain data; an all-zero value is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is below CPU_SETSIZE, checked above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
