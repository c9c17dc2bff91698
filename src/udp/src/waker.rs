//! `Waker`: an eventfd other threads write to end a driver's wait early.
//!
//! Owns one non-blocking eventfd and a flag that says whether a write is
//! already pending, so any number of `wake` calls between two loop turns cost
//! one `write` and one wake-up. The loop's driver polls the eventfd beside its
//! socket (mmsg and basic in the same `ppoll`, io_uring with a `PollAdd` SQE on
//! its receive ring) and reports in `RecvStats::woken` that it fired. It must
//! never block the caller of `wake`, lose a wake-up that follows the loop's
//! `reset`, or allocate.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::sys;

/// Wakes one event loop from any thread. Share it in an `Arc`.
///
/// The protocol: a producer publishes its work (e.g. pushes to a queue), then
/// calls [`wake`](Self::wake). The loop calls [`reset`](Self::reset) before it
/// looks for work and only then waits, so work published after the look is
/// always followed by a write the wait sees.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    /// A write is pending (or about to be): later wakes need none.
    signalled: AtomicBool,
}

impl Waker {
    /// A non-blocking, close-on-exec eventfd, not signalled.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(sys::last_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            fd,
            signalled: AtomicBool::new(false),
        })
    }

    /// Makes the loop's wait return (at most one `write` until the next `reset`).
    pub fn wake(&self) {
        if self.signalled.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. EAGAIN
        // (counter at its maximum) means it is readable already: nothing to do.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether a wake is pending since the last `reset`.
    pub fn is_signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }

    /// Consumes pending wake-ups so the next wait blocks again. Call it before
    /// looking for work; `force` also reads when no wake is flagged (the driver
    /// saw the eventfd readable: a producer between its flag and its write).
    pub fn reset(&self, force: bool) {
        if !force && !self.signalled.load(Ordering::SeqCst) {
            return;
        }
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking
        // eventfd; EAGAIN (nothing pending) leaves it untouched.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        // Read first, then clear: a wake that lands between the two skips its
        // write, but its work was published before its flag, so the loop's look
        // that follows this reset sees it.
        self.signalled.store(false, Ordering::SeqCst);
    }

    /// The eventfd a driver's wait watches beside its socket.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_wake_makes_the_fd_readable_until_reset() {
        let waker = Waker::new().unwrap();
        assert!(!sys::poll_fd(waker.raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap());
        waker.wake();
        waker.wake();
        assert!(waker.is_signalled());
        assert!(sys::poll_fd(waker.raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap());
        waker.reset(false);
        assert!(!waker.is_signalled());
        assert!(!sys::poll_fd(waker.raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap());
        waker.wake();
        assert!(sys::poll_fd(waker.raw_fd(), libc::POLLIN, Some(Duration::ZERO)).unwrap());
    }
}
