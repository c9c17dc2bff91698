//! What a polling loop does when a pass found no work, in the style of Aeron's
//! idle strategies.
//!
//! Owns the trade between latency and CPU: `BusySpin` never leaves the core,
//! `Backoff` spins, then yields, then parks briefly, and `Block` sleeps in the
//! kernel inside `recv_batch` until a datagram or the next timer deadline.
//! It must never sleep past a deadline the caller gave it, nor allocate.

use std::time::Duration;

use super::Wait;

/// How an event loop idles. `Copy` so configs can hand it around freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Block in the driver's receive until a datagram arrives or the next
    /// deadline; lowest CPU, one wake-up latency per burst.
    Block,
    /// Spin `spins` times, then `yield_now` `yields` times, then park for `park`
    /// per idle pass until work appears.
    Backoff {
        /// Busy-poll passes before yielding.
        spins: u32,
        /// `yield_now` passes before parking.
        yields: u32,
        /// How long each parked pass sleeps at most.
        park: Duration,
    },
    /// Never give up the core: lowest latency, one core at 100%.
    BusySpin,
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy::Backoff {
            spins: 100,
            yields: 10,
            park: Duration::from_micros(50),
        }
    }
}

impl std::str::FromStr for IdleStrategy {
    type Err = String;

    /// "block", "spin" or "backoff" (with the default backoff parameters).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(IdleStrategy::Block),
            "spin" | "busy-spin" => Ok(IdleStrategy::BusySpin),
            "backoff" => Ok(IdleStrategy::default()),
            other => Err(format!(
                "unknown idle strategy {other:?} (expected block, backoff or spin)"
            )),
        }
    }
}

/// Per-loop idle state. A loop calls [`wait`](Self::wait) to pick the receive
/// mode, then [`idle`](Self::idle) after a pass that did nothing and
/// [`reset`](Self::reset) after a pass that did something:
///
/// ```
/// # use intentra_udp::{IdleStrategy, Idler};
/// # use std::time::Duration;
/// let mut idler = Idler::new(IdleStrategy::default());
/// for _pass in 0..3 {
///     let _wait = idler.wait(Some(Duration::from_millis(5))); // pass to recv_batch
///     let did_work = false; // datagrams received, timers fired, packets sent
///     if did_work { idler.reset() } else { idler.idle_at_most(Duration::from_millis(5)) }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    spun: u32,
    yielded: u32,
}

impl Idler {
    /// Starts in the strategy's first phase.
    pub fn new(strategy: IdleStrategy) -> Self {
        Idler {
            strategy,
            spun: 0,
            yielded: 0,
        }
    }

    /// The strategy this idler follows.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// The receive mode for this pass, given the time until the loop's next
    /// deadline (`None`: no timer pending). Only `Block` ever waits in the kernel.
    pub fn wait(&self, until_deadline: Option<Duration>) -> Wait {
        match self.strategy {
            IdleStrategy::Block => match until_deadline {
                Some(d) if d.is_zero() => Wait::NoWait,
                Some(d) => Wait::Timeout(d),
                None => Wait::Forever,
            },
            IdleStrategy::Backoff { .. } | IdleStrategy::BusySpin => Wait::NoWait,
        }
    }

    /// Called after a pass that found no work.
    pub fn idle(&mut self) {
        self.idle_at_most(Duration::MAX);
    }

    /// Like [`idle`](Self::idle) but never parks longer than `max` (the time
    /// to the next deadline).
    pub fn idle_at_most(&mut self, max: Duration) {
        match self.strategy {
            // The blocking already happened inside recv_batch.
            IdleStrategy::Block => {}
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::Backoff {
                spins,
                yields,
                park,
            } => {
                if self.spun < spins {
                    self.spun += 1;
                    std::hint::spin_loop();
                } else if self.yielded < yields {
                    self.yielded += 1;
                    std::thread::yield_now();
                } else {
                    let nap = park.min(max);
                    if !nap.is_zero() {
                        std::thread::sleep(nap);
                    }
                }
            }
        }
    }

    /// Called after a pass that did work: the next idle starts spinning again.
    pub fn reset(&mut self) {
        self.spun = 0;
        self.yielded = 0;
    }

    /// Which phase the next `idle` would run, for tests and metrics.
    pub fn phase(&self) -> IdlePhase {
        match self.strategy {
            IdleStrategy::Block => IdlePhase::Blocking,
            IdleStrategy::BusySpin => IdlePhase::Spinning,
            IdleStrategy::Backoff { spins, yields, .. } => {
                if self.spun < spins {
                    IdlePhase::Spinning
                } else if self.yielded < yields {
                    IdlePhase::Yielding
                } else {
                    IdlePhase::Parking
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where an idler is on its way from spinning to sleeping.
pub enum IdlePhase {
    /// Waiting in the kernel until a datagram or a deadline.
    Blocking,
    /// Polling without giving up the core.
    Spinning,
    /// Polling, yielding the core between passes.
    Yielding,
    /// Polling, sleeping briefly between passes.
    Parking,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_walks_spin_yield_park_and_resets() {
        let mut idler = Idler::new(IdleStrategy::Backoff {
            spins: 2,
            yields: 1,
            park: Duration::from_micros(1),
        });
        assert_eq!(idler.phase(), IdlePhase::Spinning);
        idler.idle();
        idler.idle();
        assert_eq!(idler.phase(), IdlePhase::Yielding);
        idler.idle();
        assert_eq!(idler.phase(), IdlePhase::Parking);
        idler.idle_at_most(Duration::ZERO);
        assert_eq!(idler.phase(), IdlePhase::Parking);
        idler.reset();
        assert_eq!(idler.phase(), IdlePhase::Spinning);
    }

    #[test]
    fn only_block_waits_in_the_kernel_and_never_past_the_deadline() {
        let block = Idler::new(IdleStrategy::Block);
        assert_eq!(block.wait(None), Wait::Forever);
        assert_eq!(
            block.wait(Some(Duration::from_millis(3))),
            Wait::Timeout(Duration::from_millis(3))
        );
        assert_eq!(block.wait(Some(Duration::ZERO)), Wait::NoWait);
        assert_eq!(Idler::new(IdleStrategy::BusySpin).wait(None), Wait::NoWait);
        assert_eq!(Idler::new(IdleStrategy::default()).wait(None), Wait::NoWait);
    }

    #[test]
    fn parses_names() {
        assert_eq!("block".parse(), Ok(IdleStrategy::Block));
        assert_eq!("spin".parse(), Ok(IdleStrategy::BusySpin));
        assert_eq!("backoff".parse(), Ok(IdleStrategy::default()));
        assert!("nap".parse::<IdleStrategy>().is_err());
    }
}
