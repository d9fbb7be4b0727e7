//! Survives a mapped model file being truncated while a step reads it.
//!
//! Reading a page of a memory map past the file's new end raises SIGBUS, whose default action
//! kills the process: a server would die because someone shortened a file on disk. The handler
//! here looks the faulting address up among the registered maps; when it falls in one, it maps
//! an anonymous zero page over the faulting page, marks that map as faulted and returns, so the
//! read is retried and sees zeros. The step finishes with meaningless numbers, and the session's
//! next file check ([`super::FileStamp::check`], run after every step that reads the map) turns
//! the mark into an error naming the file, so those numbers are never returned.
//!
//! A fault outside every registered map is not ours: the previous disposition is restored and
//! the fault, retried, gets it. Only Linux is covered (the handler needs the fault address,
//! which `siginfo_t` exposes differently elsewhere); other systems keep the default action.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Maps that may be open at once; more are simply not guarded.
const SLOTS: usize = 256;

static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static ENDS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

/// Registers `[start, start + len)` and returns its slot, or `None` where faults cannot be
/// caught (another OS, all slots taken, the handler could not be installed).
pub fn register(start: *const u8, len: usize) -> Option<usize> {
    if len == 0 || !imp::install() {
        return None;
    }
    let start = start as usize;
    for (slot, s) in STARTS.iter().enumerate() {
        if s.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            FAULTED[slot].store(false, Ordering::Release);
            // Written last: the handler matches a slot only once its end is set.
            ENDS[slot].store(start + len, Ordering::Release);
            return Some(slot);
        }
    }
    log::warn!("more than {SLOTS} memory-mapped files: a truncated one will end the process");
    None
}

/// Forgets a slot; called before its map is unmapped.
pub fn unregister(slot: usize) {
    ENDS[slot].store(0, Ordering::Release);
    STARTS[slot].store(0, Ordering::Release);
}

/// Whether a read of the slot's map faulted (the file shrank under it).
pub fn faulted(slot: usize) -> bool {
    FAULTED[slot].load(Ordering::Acquire)
}

/// The registered slot holding `addr`, if any. Only atomics: safe inside the handler.
fn slot_of(addr: usize) -> Option<usize> {
    (0..SLOTS).find(|&i| {
        let end = ENDS[i].load(Ordering::Acquire);
        end != 0 && addr >= STARTS[i].load(Ordering::Acquire) && addr < end
    })
}

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{FAULTED, slot_of};

    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    /// The disposition SIGBUS had before ours, for faults that are not in our maps.
    static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();

    /// Installs the handler once; whether it is in place.
    pub fn install() -> bool {
        PREVIOUS
            .get_or_init(|| {
                // SAFETY: sysconf and sigaction are called with valid arguments; the handler only
                // touches atomics and makes the mmap/sigaction system calls.
                unsafe {
                    let page = libc::sysconf(libc::_SC_PAGESIZE);
                    if page > 0 {
                        PAGE.store(page as usize, Ordering::Relaxed);
                    }
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = handler as *const () as usize;
                    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut previous: libc::sigaction = std::mem::zeroed();
                    (libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0).then_some(previous)
                }
            })
            .is_some()
    }

    fn default_action() -> libc::sigaction {
        // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask and no flags.
        unsafe { std::mem::zeroed() }
    }

    extern "C" fn handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers. mmap with MAP_FIXED
        // replaces exactly one page of a map we registered (so of our own address space), read
        // only and anonymous; nothing else in the process refers to that page as other memory.
        unsafe {
            let addr = (*info).si_addr() as usize;
            if let Some(slot) = slot_of(addr) {
                let page = PAGE.load(Ordering::Relaxed);
                let base = (addr & !(page - 1)) as *mut libc::c_void;
                let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                if libc::mmap(base, page, libc::PROT_READ, flags, -1, 0) != libc::MAP_FAILED {
                    FAULTED[slot].store(true, Ordering::Release);
                    return;
                }
            }
            // Not ours (or no page could be mapped): the previous disposition takes the retry.
            match PREVIOUS.get() {
                Some(Some(previous)) => libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()),
                _ => libc::sigaction(libc::SIGBUS, &default_action(), std::ptr::null_mut()),
            };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn install() -> bool {
        false
    }
}
