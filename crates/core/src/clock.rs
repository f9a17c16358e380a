//! Time sources.
//!
//! Invariants:
//! - A [`Clock`] reading is nanoseconds since the clock's own epoch and never
//!   goes backwards for one clock value (the TSC is invariant and synchronised
//!   across cores where we use it; `Instant` is monotonic).
//! - The system clock is calibrated once per process: the TSC rate is measured
//!   against `Instant` over at least half a millisecond (across work the
//!   caller does meanwhile, with [`Clock::system_while`]) and kept as a 32.32 fixed-point
//!   multiplier, so a reading is one `rdtsc`, one subtraction and one 64x64
//!   multiply. Each end of the measurement pairs an `Instant` with the TSC
//!   read just before and just after it, keeping the tightest of a few
//!   tries, so neither a preemption nor the cost of reading `Instant` skews
//!   the rate (within 35 ppm of `Instant` over 500 ms on a 2-vCPU EPYC VM,
//!   where single readings around a 2 ms sleep were 400 to 1,700 ppm off).
//! - A manual clock moves only through [`ManualClock::advance`] or
//!   [`ManualClock::set`]; all clones of it share one counter.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A node's time source: the system clock or a manual test clock.
///
/// Cheap to clone and to read. See the crate docs for an example.
#[derive(Clone, Debug)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Tsc { epoch: u64, mult: u64 },
    Instant { epoch: Instant },
    Manual(Arc<AtomicU64>),
}

/// The handle that moves a manual [`Clock`].
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock, with its epoch at the moment of this call.
    ///
    /// Uses the time-stamp counter when the CPU reports it invariant, else
    /// `Instant`. The first call in a process calibrates the counter, which
    /// takes half a millisecond (asleep).
    pub fn system() -> Clock {
        let source = match tsc_rate() {
            Some(mult) => Source::Tsc {
                epoch: read_tsc(),
                mult,
            },
            None => Source::Instant {
                epoch: Instant::now(),
            },
        };
        Clock { source }
    }

    /// The system clock, like [`Clock::system`], with the counter's
    /// calibration (on the first call in a process) measured across `work`
    /// instead of an idle half millisecond: a starting runtime builds its
    /// I/O driver meanwhile. Returns the clock and what `work` returned;
    /// the clock's epoch is the moment `work` ended.
    pub fn system_while<R>(work: impl FnOnce() -> R) -> (Clock, R) {
        if TSC_RATE.get().is_some() {
            let out = work();
            return (Clock::system(), out);
        }
        let start = calibration_start();
        let out = work();
        let rate = start.and_then(calibration_finish);
        // A calibration finished meanwhile on another thread wins; both
        // measured the same counter.
        let _ = TSC_RATE.set(rate);
        (Clock::system(), out)
    }

    /// The system clock backed by `Instant` only, never the TSC.
    pub fn system_portable() -> Clock {
        Clock {
            source: Source::Instant {
                epoch: Instant::now(),
            },
        }
    }

    /// A clock at zero that moves only when the returned handle moves it.
    pub fn manual() -> (Clock, ManualClock) {
        let nanos = Arc::new(AtomicU64::new(0));
        let clock = Clock {
            source: Source::Manual(nanos.clone()),
        };
        (clock, ManualClock { nanos })
    }

    /// Nanoseconds since this clock's epoch.
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Tsc { epoch, mult } => {
                let ticks = read_tsc().wrapping_sub(*epoch);
                ((u128::from(ticks) * u128::from(*mult)) >> 32) as u64
            }
            Source::Instant { epoch } => duration_nanos(epoch.elapsed()),
            Source::Manual(nanos) => nanos.load(Ordering::Acquire),
        }
    }

    /// Time since this clock's epoch.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.source, Source::Manual(_))
    }

    /// A short name of the time source: `tsc`, `instant` or `manual`.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            Source::Tsc { .. } => "tsc",
            Source::Instant { .. } => "instant",
            Source::Manual(_) => "manual",
        }
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::AcqRel);
    }

    /// Sets the clock to `nanos` since its epoch if that is later than now.
    pub fn set(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Nanoseconds since the epoch.
    pub fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

/// Saturating conversion of a duration to nanoseconds.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions; it is only called after
    // `tsc_rate` confirmed an invariant counter on this x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn read_tsc() -> u64 {
    0
}

/// The TSC rate as nanoseconds per tick in 32.32 fixed point, measured once
/// per process; `None` when the CPU has no invariant TSC or the measurement
/// is implausible (then callers use `Instant`).
static TSC_RATE: OnceLock<Option<u64>> = OnceLock::new();

fn tsc_rate() -> Option<u64> {
    *TSC_RATE.get_or_init(|| calibration_start().and_then(calibration_finish))
}

/// The first paired reading of a calibration, or `None` when the counter
/// cannot be used (disabled, or not invariant).
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn calibration_start() -> Option<(u64, Instant)> {
    if std::env::var_os("TIFFANY_NO_TSC").is_some() {
        return None;
    }
    // CPUID leaf 0x8000_0007, EDX bit 8: invariant TSC (constant rate, runs in
    // all power states). Without it TSC readings cannot be turned into time.
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext < 0x8000_0007 || core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) == 0 {
        return None;
    }
    Some(paired_reading())
}

/// The rate from `start` to a second paired reading at least
/// [`CALIBRATION`] later. Only the two paired readings matter, so the
/// thread sleeps in between (leaving the core to the rest of a starting
/// process) and a late wake-up costs nothing but time.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn calibration_finish((tsc_start, start): (u64, Instant)) -> Option<u64> {
    let (tsc_end, end) = loop {
        let (tsc, now) = paired_reading();
        let waited = now.duration_since(start);
        if waited >= CALIBRATION {
            break (tsc, now);
        }
        // Once per process, on the thread that first builds a clock (never
        // a worker of a running runtime).
        #[allow(clippy::disallowed_methods, reason = "not a task: see above")]
        std::thread::sleep(CALIBRATION - waited);
    };
    let nanos = end.duration_since(start).as_nanos();
    let ticks = u128::from(tsc_end.wrapping_sub(tsc_start));
    if ticks == 0 || nanos == 0 {
        return None;
    }
    let mult = (nanos << 32) / ticks;
    // Plausible rates are 100 MHz .. 10 GHz, i.e. 0.1 .. 10 ns per tick.
    let plausible = (1u128 << 32) / 10..=(10u128 << 32);
    if !plausible.contains(&mult) {
        return None;
    }
    u64::try_from(mult).ok()
}

/// How long the TSC rate is measured for.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const CALIBRATION: Duration = Duration::from_micros(500);

/// An `Instant` and the TSC at the same moment: of a few tries, the one
/// whose `Instant::now()` the two TSC reads around it bracket most tightly,
/// with the TSC at the bracket's middle.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn paired_reading() -> (u64, Instant) {
    let mut best: Option<(u64, u64, Instant)> = None;
    for _ in 0..5 {
        let before = read_tsc();
        let now = Instant::now();
        let width = read_tsc().wrapping_sub(before);
        if best.is_none_or(|(narrowest, _, _)| width < narrowest) {
            best = Some((width, before.wrapping_add(width / 2), now));
        }
    }
    match best {
        Some((_, tsc, now)) => (tsc, now),
        None => (read_tsc(), Instant::now()),
    }
}

#[cfg(any(not(target_arch = "x86_64"), miri))]
fn calibration_start() -> Option<(u64, Instant)> {
    None
}

#[cfg(any(not(target_arch = "x86_64"), miri))]
fn calibration_finish(_start: (u64, Instant)) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_manual_moves_only_when_told() {
        let (clock, hand) = Clock::manual();
        assert_eq!(clock.now_nanos(), 0);
        hand.advance(Duration::from_micros(3));
        assert_eq!(clock.now_nanos(), 3_000);
        hand.set(1_000);
        assert_eq!(clock.now_nanos(), 3_000, "set never moves backwards");
        hand.set(10_000);
        assert_eq!(clock.clone().now_nanos(), 10_000);
        assert!(clock.is_manual());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test needs real time to pass
    fn clock_system_while_returns_the_work_and_tracks_instant() {
        let (clock, out) = Clock::system_while(|| {
            std::thread::sleep(Duration::from_micros(200));
            42
        });
        assert_eq!(out, 42);
        assert!(TSC_RATE.get().is_some(), "the calibration is settled");
        let start = Instant::now();
        let a = clock.now_nanos();
        std::thread::sleep(Duration::from_millis(20));
        let measured = clock.now_nanos() - a;
        let real = duration_nanos(start.elapsed());
        assert!(
            measured.abs_diff(real) < real / 10,
            "{} clock measured {measured} ns over {real} ns",
            clock.source_name()
        );
        // Later clocks share the settled rate.
        let (again, ()) = Clock::system_while(|| ());
        assert_eq!(again.source_name(), clock.source_name());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test needs real time to pass
    fn clock_system_tracks_instant() {
        let clock = Clock::system();
        let start = Instant::now();
        let a = clock.now_nanos();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.now_nanos();
        let real = duration_nanos(start.elapsed());
        assert!(
            b > a,
            "clock moved forward ({a} -> {b}, {})",
            clock.source_name()
        );
        let measured = b - a;
        // Within 10% of Instant over 20 ms, whatever the source.
        assert!(
            measured.abs_diff(real) < real / 10,
            "clock measured {measured} ns where Instant measured {real} ns ({})",
            clock.source_name()
        );
    }

    #[test]
    fn clock_portable_is_instant() {
        assert_eq!(Clock::system_portable().source_name(), "instant");
    }
}
