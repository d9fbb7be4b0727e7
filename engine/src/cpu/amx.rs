//! Intel AMX (Sapphire Rapids and later): eight tile registers of up to 16 rows × 64 bytes,
//! and a matrix unit that multiplies two byte tiles into a 16 × 16 tile of i32 sums in one
//! instruction, 16 times the multiply-adds of a 512-bit `vpdpbusd`.
//!
//! Linux gives a process tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and
//! each thread loads a tile configuration before its first tile instruction; without either,
//! a tile instruction faults. Rust has no stable AMX intrinsics, so the kernels write the few
//! instructions they use as inline assembly, which the assembler accepts without a target
//! feature.

use std::arch::asm;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Whether this CPU has AMX-INT8 and the OS lets this process use the tiles (asked once).
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| cpu_has_int8_tiles() && os_grants_tiles())
}

/// AMX-TILE and AMX-INT8: bits 24 and 25 of `cpuid` leaf 7's EDX.
fn cpu_has_int8_tiles() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    __cpuid(0).eax >= 7 && __cpuid_count(7, 0).edx & (0b11 << 24) == 0b11 << 24
}

#[cfg(target_os = "linux")]
fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this request only widens the register state the kernel saves for this process;
    // it fails (non-zero) where the kernel or a hypervisor does not offer tiles.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tiles() -> bool {
    false
}

/// A tile configuration (palette 1): rows and bytes per row of each tile register.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Every tile unused.
    pub(crate) const fn new() -> TileConfig {
        TileConfig { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] }
    }

    /// Tile `tile` as `rows` rows of `bytes` bytes (at most 16 × 64).
    pub(crate) const fn with(mut self, tile: usize, rows: u8, bytes: u16) -> TileConfig {
        assert!(tile < 8 && rows <= 16 && bytes <= 64);
        self.rows[tile] = rows;
        self.bytes_per_row[tile] = bytes;
        self
    }
}

/// The tile configuration loaded on this thread while the guard lives; dropping it releases
/// the tiles (the OS then saves no tile state for the thread). Not `Send`: the configuration
/// belongs to the thread.
pub(crate) struct Tiles(PhantomData<*const ()>);

impl Tiles {
    /// # Safety
    /// [`available`] must have returned true.
    pub(crate) unsafe fn load(config: &TileConfig) -> Tiles {
        // SAFETY: the tiles are available (the caller's guarantee) and `config` is a valid
        // 64-byte palette-1 configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config as *const TileConfig, options(nostack, readonly)) };
        Tiles(PhantomData)
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: a configuration is loaded (this guard exists); releasing one is always valid.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
