//! Which vector instruction set the CPU kernels use, found at run time.
//!
//! An [`Isa`] value can only be obtained for an instruction set the running CPU has, so
//! holding one is the proof the kernels need before they enter `#[target_feature]` code.

use std::fmt;
use std::sync::OnceLock;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX-512 with VNNI's byte dot products.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-512 VNNI with AMX's int8 tiles, which the prefill GEMM of Q4_K and Q6_K takes.
    #[cfg(target_arch = "x86_64")]
    Avx512Amx,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// A vector instruction set available on this CPU.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Isa(Kind);

impl Isa {
    /// Plain Rust, no explicit vectors: the path every other one is checked against.
    pub const SCALAR: Isa = Isa(Kind::Scalar);

    /// The widest instruction set this CPU has.
    /// `WLLM_CPU_ISA=scalar|avx2|avx512|avx512vnni|avx512amx|neon` asks for a narrower one (an
    /// unavailable request falls back to the best available).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let all = Isa::available();
            let wanted = std::env::var("WLLM_CPU_ISA").ok();
            wanted
                .and_then(|w| all.iter().copied().find(|i| i.name().eq_ignore_ascii_case(w.trim())))
                .unwrap_or_else(|| *all.last().unwrap_or(&Isa::SCALAR))
        })
    }

    /// Every instruction set this CPU can run, narrowest first (for tests).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut out = vec![Isa::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2 {
                out.push(Isa(Kind::Avx2));
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                {
                    out.push(Isa(Kind::Avx512));
                    if crate::cpu::quant::vnni::available() {
                        out.push(Isa(Kind::Avx512Vnni));
                        if crate::cpu::amx::available() {
                            out.push(Isa(Kind::Avx512Amx));
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push(Isa(Kind::Neon));
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Amx => "avx512amx",
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "neon",
        }
    }

    // The x86 questions are asked on every target (false off x86-64), so that code choosing
    // a kernel compiles for ARM too; the kernels themselves stay behind `cfg`.
    pub(crate) fn is_avx512(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return matches!(self.0, Kind::Avx512 | Kind::Avx512Vnni | Kind::Avx512Amx);
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    pub(crate) fn is_avx512_vnni(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return matches!(self.0, Kind::Avx512Vnni | Kind::Avx512Amx);
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    pub(crate) fn is_amx(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.0 == Kind::Avx512Amx;
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    pub(crate) fn is_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.0 == Kind::Avx2;
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn is_neon(self) -> bool {
        self.0 == Kind::Neon
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Isa {
    /// f32 lanes of one vector.
    pub(crate) fn lanes(self) -> usize {
        match self.0 {
            Kind::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => 8,
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 | Kind::Avx512Vnni | Kind::Avx512Amx => 16,
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => 4,
        }
    }
}
