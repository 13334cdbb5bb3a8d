//! Intel AMX tiles for the inference engine's quantized products.
//!
//! AMX multiplies whole tiles of 8-bit integers into 32-bit sums: one `tdpbsud` takes 16 rows of
//! 32 activations and 32 inputs of 16 weight rows (8,192 multiply-adds) into a 16 x 16 tile of
//! sums, where AVX-512 VNNI needs 16 instructions and a broadcast each. The sums are exact
//! integers, so a kernel that scales them as the other kernels do computes the same bits.
//!
//! The instructions exist in Rust only as inline assembly (the intrinsics are unstable), so this
//! crate holds the little unsafe code they need behind a checked interface:
//! - [`available`]: whether the CPU has AMX-TILE and AMX-INT8, the operating system enables
//!   their state, and Linux granted this process the tile data (`arch_prctl`), asked once;
//! - [`Tiles::configure`]: the tiles configured on this thread (one [`Tiles`] per thread at a
//!   time, released when dropped);
//! - [`Tiles::load`], [`Tiles::multiply`] and [`Tiles::store`]: one block's operands into one
//!   of two operand pairs, their products into one of four sum tiles, and a sum tile out to
//!   memory, every address checked against the slices' bounds;
//! - [`scale_sums`]: a block's stored sums scaled into 16 rows' float chains, instruction by
//!   instruction (plain AVX-512, written out so that the 16 chains stay in registers);
//! - [`Gemm`]: the tiles configured instead for plain integer products over many blocks (the
//!   engine's argmax screen): two activation tiles by two weight tiles of 64 inputs, summed
//!   into four tiles.
//!
//! The layout the tiles use (`A` is the activations, `B` the weights):
//! - `A`: 16 rows of 32 signed bytes, row `r` at byte `r * stride` of the slice;
//! - `B`: 8 rows of 64 bytes, row `k` holding inputs `4k..4k + 4` of each of 16 weight rows
//!   (weight row `n` at bytes `4n..4n + 4`), signed or unsigned ([`Weights`]);
//! - the sums: `sums[r][n]` is activation row `r` times weight row `n`.

use std::cell::Cell;
use std::marker::PhantomData;

/// Sum tiles a [`Tiles`] holds at once (tile registers 0 to 3).
pub const SUM_TILES: usize = 4;

/// Bytes of one block of weights in the tiles' layout: 8 rows of 64.
pub const WEIGHT_BYTES: usize = 512;

/// Whether the weights' bytes are signed (`tdpbssd`) or unsigned (`tdpbusd`'s mirror,
/// `tdpbsud`); the activations are always signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Values -128..=127.
    Signed,
    /// Values 0..=255.
    Unsigned,
}

/// Whether this process can use the tiles: the CPU has AMX-TILE and AMX-INT8, the operating
/// system saves their state (XCR0 bits 17 and 18), and Linux granted this process the tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Asked once per process; `false` on
/// other CPUs and systems, and when `AGORA_AMX=0` is set (to measure without them).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE
        .get_or_init(|| std::env::var("AGORA_AMX").map_or(true, |v| v != "0") && sys::enable())
}

thread_local! {
    /// Whether a [`Tiles`] is alive on this thread.
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// The tiles, configured on this thread: tiles 0-3 hold sums (16 rows of 16 `i32`), tiles 4
/// and 6 an activation block each (16 rows of 32 bytes), tiles 5 and 7 a weight block each (8
/// rows of 64 bytes): operand pairs 0 (4, 5) and 1 (6, 7). Not `Send`: the configuration
/// belongs to the thread. Dropping it releases the tiles.
#[derive(Debug)]
pub struct Tiles {
    _thread: PhantomData<*mut ()>,
}

impl Tiles {
    /// The tiles on this thread; `None` when they are not [`available`] or another [`Tiles`] is
    /// alive on this thread (a caller then computes without them).
    pub fn configure() -> Option<Tiles> {
        if !available() || CONFIGURED.get() {
            return None;
        }
        sys::load_config();
        CONFIGURED.set(true);
        Some(Tiles {
            _thread: PhantomData,
        })
    }

    /// Operand pair `X` (0 or 1) loaded, for a later [`Tiles::multiply`]: `A`, 16 rows of 32
    /// signed bytes, row `r` at `a[r * stride..r * stride + 32]`; `B`, one block of weights in
    /// the tiles' layout. Two pairs let the next block's loads go ahead of the current
    /// block's product (6-7% faster than loading each right before its product).
    ///
    /// # Panics
    /// If `a` is shorter than `15 * stride + 32` bytes.
    #[inline]
    pub fn load<const X: usize>(&mut self, a: &[u8], stride: usize, b: &[u8; WEIGHT_BYTES]) {
        const { assert!(X < 2, "there are two operand pairs") };
        check_activations(a.len(), stride);
        sys::load::<X>(a, stride, b);
    }

    /// Sum tile `T` (0 to 3) set to the product of operand pair `X` (last [`Tiles::load`]ed).
    #[inline]
    pub fn multiply<const T: usize, const X: usize>(&mut self, weights: Weights) {
        const { assert!(T < SUM_TILES && X < 2, "four sum tiles, two operand pairs") };
        sys::multiply::<T, X>(weights);
    }

    /// Sum tile `T` (0 to 3) into `out` (`out[r][n]`: activation row `r`, weight row `n`).
    #[inline]
    pub fn store<const T: usize>(&mut self, out: &mut [[i32; 16]; 16]) {
        const { assert!(T < SUM_TILES, "there are four sum tiles") };
        sys::store::<T>(out);
    }
}

/// Bytes of one operand tile of [`Gemm`]: 16 rows of 64.
pub const GEMM_TILE_BYTES: usize = 1024;

/// The tiles configured for plain integer products (no float step between blocks): tiles 0-3
/// hold sums, `C[2i + j]` (16 rows of 16 `i32`), tiles 4 and 5 the activations `A[i]` (16 rows
/// of 64 signed bytes), tiles 6 and 7 the weights `B[j]` (16 rows of 64 signed bytes, row `k`
/// holding inputs `4k..4k + 4` of each of 16 weight rows, weight row `n` at bytes
/// `4n..4n + 4`). Two activation tiles by two weight tiles: each operand loaded serves two
/// products. The same rules as [`Tiles`]: one configuration per thread, released on drop.
#[derive(Debug)]
pub struct Gemm {
    _thread: PhantomData<*mut ()>,
}

impl Gemm {
    /// The tiles on this thread, configured for [`Gemm`]; `None` when they are not
    /// [`available`] or a [`Tiles`] or [`Gemm`] is alive on this thread.
    pub fn configure() -> Option<Gemm> {
        if !available() || CONFIGURED.get() {
            return None;
        }
        sys::load_gemm_config();
        CONFIGURED.set(true);
        Some(Gemm {
            _thread: PhantomData,
        })
    }

    /// `A[I]` (`I` 0 or 1) loaded: 16 rows of 64 signed bytes, row `r` at
    /// `a[r * stride..r * stride + 64]`.
    ///
    /// # Panics
    /// If `a` is shorter than `15 * stride + 64` bytes.
    #[inline]
    pub fn load_a<const I: usize>(&mut self, a: &[u8], stride: usize) {
        const { assert!(I < 2, "two activation tiles") };
        let end = stride.checked_mul(15).and_then(|s| s.checked_add(64));
        assert!(
            end.is_some_and(|end| end <= a.len()),
            "an activation tile of stride {stride} needs {end:?} bytes, the slice has {}",
            a.len()
        );
        sys::gemm_load::<I>(a, stride, 4);
    }

    /// `B[J]` (`J` 0 or 1) loaded: 16 rows of 64 signed bytes.
    #[inline]
    pub fn load_b<const J: usize>(&mut self, b: &[u8; GEMM_TILE_BYTES]) {
        const { assert!(J < 2, "two weight tiles") };
        sys::gemm_load::<J>(b, 64, 6);
    }

    /// `C[2I + J]` set to zero.
    #[inline]
    pub fn zero<const I: usize, const J: usize>(&mut self) {
        const { assert!(I < 2 && J < 2, "two by two sum tiles") };
        match (I, J) {
            (0, 0) => sys::zero::<0>(),
            (0, 1) => sys::zero::<1>(),
            (1, 0) => sys::zero::<2>(),
            _ => sys::zero::<3>(),
        }
    }

    /// `C[2I + J] += A[I] B[J]` (signed bytes by signed bytes, exact 32-bit sums).
    #[inline]
    pub fn dot<const I: usize, const J: usize>(&mut self) {
        const { assert!(I < 2 && J < 2, "two by two sum tiles") };
        sys::gemm_dot::<I, J>();
    }

    /// `C[2I + J]` into `out` (`out[r][n]`: activation row `r`, weight row `n`).
    #[inline]
    pub fn store<const I: usize, const J: usize>(&mut self, out: &mut [[i32; 16]; 16]) {
        const { assert!(I < 2 && J < 2, "two by two sum tiles") };
        match (I, J) {
            (0, 0) => sys::store::<0>(out),
            (0, 1) => sys::store::<1>(out),
            (1, 0) => sys::store::<2>(out),
            _ => sys::store::<3>(out),
        }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        sys::release();
        CONFIGURED.set(false);
    }
}

/// The float step of a block of sums, for 16 rows: for each row `r` in order,
/// `acc[r] = fma(f32(sums[r]), d * splat(scales[r]), acc[r])` (`vcvtdq2ps`, `vmulps`,
/// `vfmadd231ps`: each rounded as those instructions round, the product `d * scales[r]` to f32
/// before the fused multiply-add). Written out instruction by instruction because the compiler,
/// left to schedule the same intrinsics, hoisted all 16 products ahead and spilled the 16
/// chains to the stack (a load and a store per row and block).
///
/// # Safety
/// Safe to call from functions that enable AVX-512F (as the engine's AMX kernel does); from
/// elsewhere only on a CPU that has it, which is what makes the call `unsafe` there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub fn scale_sums(
    acc: &mut [std::arch::x86_64::__m512; 16],
    sums: &[[i32; 16]; 16],
    d: std::arch::x86_64::__m512,
    scales: &[f32; 16],
) {
    // SAFETY: reads the 1,024 bytes of `sums` and the 64 of `scales` (both borrowed, whole
    // arrays) and computes in vector registers only; AVX-512F is enabled for this function.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::asm!(
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 0]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 0]{{1to16}}",
                "vfmadd231ps {a0}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 64]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 4]{{1to16}}",
                "vfmadd231ps {a1}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 128]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 8]{{1to16}}",
                "vfmadd231ps {a2}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 192]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 12]{{1to16}}",
                "vfmadd231ps {a3}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 256]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 16]{{1to16}}",
                "vfmadd231ps {a4}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 320]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 20]{{1to16}}",
                "vfmadd231ps {a5}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 384]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 24]{{1to16}}",
                "vfmadd231ps {a6}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 448]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 28]{{1to16}}",
                "vfmadd231ps {a7}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 512]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 32]{{1to16}}",
                "vfmadd231ps {a8}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 576]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 36]{{1to16}}",
                "vfmadd231ps {a9}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 640]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 40]{{1to16}}",
                "vfmadd231ps {a10}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 704]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 44]{{1to16}}",
                "vfmadd231ps {a11}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 768]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 48]{{1to16}}",
                "vfmadd231ps {a12}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 832]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 52]{{1to16}}",
                "vfmadd231ps {a13}, {t2}, {t3}",
                "vcvtdq2ps {t0}, zmmword ptr [{s} + 896]",
                "vmulps {t1}, {d}, dword ptr [{sc} + 56]{{1to16}}",
                "vfmadd231ps {a14}, {t0}, {t1}",
                "vcvtdq2ps {t2}, zmmword ptr [{s} + 960]",
                "vmulps {t3}, {d}, dword ptr [{sc} + 60]{{1to16}}",
                "vfmadd231ps {a15}, {t2}, {t3}",
                s = in(reg) sums.as_ptr(),
                sc = in(reg) scales.as_ptr(),
                d = in(zmm_reg) d,
                t0 = out(zmm_reg) _,
                t1 = out(zmm_reg) _,
                t2 = out(zmm_reg) _,
                t3 = out(zmm_reg) _,
                a0 = inout(zmm_reg) acc[0],
                a1 = inout(zmm_reg) acc[1],
                a2 = inout(zmm_reg) acc[2],
                a3 = inout(zmm_reg) acc[3],
                a4 = inout(zmm_reg) acc[4],
                a5 = inout(zmm_reg) acc[5],
                a6 = inout(zmm_reg) acc[6],
                a7 = inout(zmm_reg) acc[7],
                a8 = inout(zmm_reg) acc[8],
                a9 = inout(zmm_reg) acc[9],
                a10 = inout(zmm_reg) acc[10],
                a11 = inout(zmm_reg) acc[11],
                a12 = inout(zmm_reg) acc[12],
                a13 = inout(zmm_reg) acc[13],
                a14 = inout(zmm_reg) acc[14],
                a15 = inout(zmm_reg) acc[15],
                options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// Panics unless `len` bytes hold 16 rows of 32 bytes, `stride` bytes apart.
fn check_activations(len: usize, stride: usize) {
    let end = stride.checked_mul(15).and_then(|s| s.checked_add(32));
    assert!(
        end.is_some_and(|end| end <= len),
        "an activation tile of stride {stride} needs {end:?} bytes, the slice has {len}"
    );
}

impl Drop for Tiles {
    fn drop(&mut self) {
        sys::release();
        CONFIGURED.set(false);
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod sys {
    //! The instructions. Each function's safety argument is at its `unsafe` block.

    use super::{WEIGHT_BYTES, Weights};
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid, __cpuid_count};

    /// `ARCH_REQ_XCOMP_PERM` (`arch_prctl` code) and `XFEATURE_XTILEDATA` (its argument).
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    /// `arch_prctl`'s system call number on x86-64.
    const SYS_ARCH_PRCTL: u64 = 158;

    /// The tile configuration (`ldtilecfg`'s 64 bytes): palette 1, then each tile's bytes per
    /// row (16-bit, from byte 16) and rows (from byte 48).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        // (tile, rows, bytes per row)
        let tiles = [
            (0, 16, 64),
            (1, 16, 64),
            (2, 16, 64),
            (3, 16, 64),
            (4, 16, 32),
            (5, 8, 64),
            (6, 16, 32),
            (7, 8, 64),
        ];
        let mut i = 0;
        while i < tiles.len() {
            let (t, rows, colsb) = tiles[i];
            c[16 + 2 * t] = colsb;
            c[48 + t] = rows;
            i += 1;
        }
        Config(c)
    };

    pub(super) fn enable() -> bool {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8. Leaf 1: ECX bit 27 OSXSAVE.
        if __cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        if leaf7.edx >> 24 & 1 == 0 || leaf7.edx >> 25 & 1 == 0 {
            return false;
        }
        if __cpuid(1).ecx >> 27 & 1 == 0 {
            return false;
        }
        let (lo, _hi): (u32, u32);
        // SAFETY: `xgetbv` with ECX = 0 reads XCR0; it exists since OSXSAVE is set (checked
        // above), touches no memory and only the named registers.
        #[allow(unsafe_code)]
        unsafe {
            asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi,
                options(nomem, nostack, preserves_flags));
        }
        // XCR0 bits 17 (tile configuration) and 18 (tile data): the system saves the tiles.
        if lo >> 17 & 3 != 3 {
            return false;
        }
        let ret: i64;
        // SAFETY: the `arch_prctl` system call with ARCH_REQ_XCOMP_PERM only asks the kernel
        // for permission to use the tile data in this process; it reads no memory of ours. The
        // `syscall` instruction clobbers RCX and R11, declared.
        #[allow(unsafe_code)]
        unsafe {
            asm!("syscall",
                inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _, lateout("r11") _,
                options(nostack));
        }
        ret == 0
    }

    pub(super) fn load_config() {
        let config = &CONFIG;
        // SAFETY: `ldtilecfg` reads the 64 bytes of `config` (aligned, alive); it is only
        // called once `enable` found the instructions and the kernel granted the tile data.
        #[allow(unsafe_code)]
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, preserves_flags, readonly));
        }
    }

    /// [`super::Gemm`]'s configuration: every tile 16 rows of 64 bytes.
    const GEMM_CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    pub(super) fn load_gemm_config() {
        let config = &GEMM_CONFIG;
        // SAFETY: as `load_config`: `ldtilecfg` reads the 64 bytes of `config`, once `enable`
        // found the instructions and the kernel granted the tile data.
        #[allow(unsafe_code)]
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, preserves_flags, readonly));
        }
    }

    /// Tile `BASE + X` loaded with 16 rows of 64 bytes, `stride` apart, from `a`.
    #[inline]
    pub(super) fn gemm_load<const X: usize>(a: &[u8], stride: usize, base: usize) {
        // SAFETY: the tiles are configured on this thread for `Gemm` (a `Gemm` is borrowed):
        // tile 4 + X or 6 + X is 16 rows of 64 bytes. `tileloadd` reads 16 rows of 64 bytes at
        // `a + r * stride`; the callers checked `15 * stride + 64 <= a.len()` (or pass a whole
        // 1,024-byte array with stride 64). No memory is written.
        #[allow(unsafe_code)]
        unsafe {
            match base + X {
                4 => {
                    asm!("tileloadd tmm4, [{a} + {s} * 1]", a = in(reg) a.as_ptr(), s = in(reg) stride, options(nostack, preserves_flags, readonly))
                }
                5 => {
                    asm!("tileloadd tmm5, [{a} + {s} * 1]", a = in(reg) a.as_ptr(), s = in(reg) stride, options(nostack, preserves_flags, readonly))
                }
                6 => {
                    asm!("tileloadd tmm6, [{a} + {s} * 1]", a = in(reg) a.as_ptr(), s = in(reg) stride, options(nostack, preserves_flags, readonly))
                }
                _ => {
                    asm!("tileloadd tmm7, [{a} + {s} * 1]", a = in(reg) a.as_ptr(), s = in(reg) stride, options(nostack, preserves_flags, readonly))
                }
            }
        }
    }

    #[inline]
    pub(super) fn gemm_dot<const I: usize, const J: usize>() {
        // SAFETY: touches only tiles (configured on this thread for `Gemm`), no memory or
        // register.
        #[allow(unsafe_code)]
        unsafe {
            asm!(
                "tdpbssd tmm{c}, tmm{a}, tmm{b}",
                c = const 2 * I + J,
                a = const 4 + I,
                b = const 6 + J,
                options(nomem, nostack, preserves_flags),
            );
        }
    }

    pub(super) fn release() {
        // SAFETY: `tilerelease` returns the tiles to their initial state; it touches no memory
        // and no general register. Only called for a configured `Tiles`.
        #[allow(unsafe_code)]
        unsafe {
            asm!("tilerelease", options(nomem, nostack, preserves_flags));
        }
    }

    #[inline]
    pub(super) fn load<const X: usize>(a: &[u8], stride: usize, b: &[u8; WEIGHT_BYTES]) {
        let row = 64usize;
        // SAFETY: the tiles are configured on this thread (a `Tiles` is borrowed).
        // `tileloadd` reads 16 rows of 32 bytes at `a + r * stride` (the caller checked that
        // `15 * stride + 32 <= a.len()`) into tile 4 (pair 0) or 6 (pair 1), and 8 rows of 64
        // bytes at `b + 64 k` (`b` is 512 bytes) into tile 5 or 7. No memory is written.
        #[allow(unsafe_code)]
        unsafe {
            asm!(
                "tileloadd tmm{ta}, [{a} + {stride} * 1]",
                "tileloadd tmm{tb}, [{b} + {row} * 1]",
                ta = const 4 + 2 * X,
                tb = const 5 + 2 * X,
                a = in(reg) a.as_ptr(),
                stride = in(reg) stride,
                b = in(reg) b.as_ptr(),
                row = in(reg) row,
                options(nostack, preserves_flags, readonly),
            );
        }
    }

    #[inline]
    pub(super) fn multiply<const T: usize, const X: usize>(weights: Weights) {
        // SAFETY: touches only tiles (configured on this thread) and no memory or register.
        #[allow(unsafe_code)]
        unsafe {
            match weights {
                Weights::Unsigned => asm!(
                    "tilezero tmm{t}",
                    "tdpbsud tmm{t}, tmm{ta}, tmm{tb}",
                    t = const T,
                    ta = const 4 + 2 * X,
                    tb = const 5 + 2 * X,
                    options(nomem, nostack, preserves_flags),
                ),
                Weights::Signed => asm!(
                    "tilezero tmm{t}",
                    "tdpbssd tmm{t}, tmm{ta}, tmm{tb}",
                    t = const T,
                    ta = const 4 + 2 * X,
                    tb = const 5 + 2 * X,
                    options(nomem, nostack, preserves_flags),
                ),
            }
        }
    }

    #[inline]
    pub(super) fn zero<const T: usize>() {
        // SAFETY: touches only a tile (configured on this thread), no memory or register.
        #[allow(unsafe_code)]
        unsafe {
            asm!("tilezero tmm{t}", t = const T, options(nomem, nostack, preserves_flags));
        }
    }

    #[inline]
    pub(super) fn store<const T: usize>(out: &mut [[i32; 16]; 16]) {
        let row = 64usize;
        // SAFETY: the tiles are configured on this thread (a `Tiles` is borrowed).
        // `tilestored` writes 16 rows of 64 bytes, 64 bytes apart: exactly `out`'s 1,024
        // bytes, which are borrowed mutably.
        #[allow(unsafe_code)]
        unsafe {
            asm!(
                "tilestored [{out} + {row} * 1], tmm{t}",
                t = const T,
                out = in(reg) out.as_mut_ptr(),
                row = in(reg) row,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod sys {
    //! No tiles: [`super::available`] is false, so no [`super::Tiles`] exists and the others
    //! are never called.

    use super::{WEIGHT_BYTES, Weights};

    pub(super) fn enable() -> bool {
        false
    }
    pub(super) fn load_config() {}
    pub(super) fn release() {}
    pub(super) fn store<const T: usize>(_: &mut [[i32; 16]; 16]) {
        unreachable!("no tiles on this system")
    }
    pub(super) fn load<const X: usize>(_: &[u8], _: usize, _: &[u8; WEIGHT_BYTES]) {
        unreachable!("no tiles on this system")
    }
    pub(super) fn multiply<const T: usize, const X: usize>(_: Weights) {
        unreachable!("no tiles on this system")
    }
    pub(super) fn zero<const T: usize>() {
        unreachable!("no tiles on this system")
    }
    pub(super) fn load_gemm_config() {}
    pub(super) fn gemm_load<const X: usize>(_: &[u8], _: usize, _: usize) {
        unreachable!("no tiles on this system")
    }
    pub(super) fn gemm_dot<const I: usize, const J: usize>() {
        unreachable!("no tiles on this system")
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// 16 activation rows, `stride` bytes apart, and one weight block, from a seed.
    fn block(seed: u64, stride: usize, weights: Weights) -> (Vec<u8>, [u8; WEIGHT_BYTES]) {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        };
        let a: Vec<u8> = (0..16 * stride + 32).map(|_| next()).collect();
        let mut b = [0u8; WEIGHT_BYTES];
        for v in &mut b {
            *v = next();
            if weights == Weights::Unsigned {
                *v &= 15;
            }
        }
        (a, b)
    }

    fn reference(
        a: &[u8],
        stride: usize,
        b: &[u8; WEIGHT_BYTES],
        weights: Weights,
    ) -> [[i32; 16]; 16] {
        let mut out = [[0i32; 16]; 16];
        for (r, row) in out.iter_mut().enumerate() {
            for (n, v) in row.iter_mut().enumerate() {
                *v = (0..32)
                    .map(|k| {
                        let x = i32::from(a[r * stride + k] as i8);
                        let w = b[64 * (k / 4) + 4 * n + k % 4];
                        let w = match weights {
                            Weights::Signed => i32::from(w as i8),
                            Weights::Unsigned => i32::from(w),
                        };
                        x * w
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn tiles_compute_the_exact_integer_products() {
        let Some(mut tiles) = Tiles::configure() else {
            // A CPU without AMX has nothing to compare: say so. One with it must grant them.
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            assert!(
                leaf7.edx >> 24 & 3 != 3 || std::env::var("AGORA_AMX").is_ok_and(|v| v == "0"),
                "the CPU has AMX-TILE and AMX-INT8 but the tiles could not be configured"
            );
            eprintln!("no AMX tiles on this CPU: nothing to compare");
            return;
        };
        // A second configuration on the same thread is refused while the first is alive.
        assert!(Tiles::configure().is_none());
        for (seed, stride) in [(1, 32), (2, 44), (3, 44 * 48), (4, 100)] {
            for weights in [Weights::Signed, Weights::Unsigned] {
                let (a, b) = block(seed, stride, weights);
                let mut got = [[[0i32; 16]; 16]; 4];
                tiles.load::<0>(&a, stride, &b);
                tiles.multiply::<0, 0>(weights);
                tiles.load::<1>(&a[stride..], stride, &b);
                tiles.multiply::<1, 1>(weights);
                tiles.multiply::<2, 0>(weights);
                tiles.multiply::<3, 0>(weights);
                tiles.store::<0>(&mut got[0]);
                tiles.store::<1>(&mut got[1]);
                tiles.store::<2>(&mut got[2]);
                tiles.store::<3>(&mut got[3]);
                let want = reference(&a, stride, &b, weights);
                assert_eq!(got[0], want, "stride {stride}, {weights:?}");
                assert_eq!(got[2], want);
                assert_eq!(got[3], want);
                assert_eq!(got[1], reference(&a[stride..], stride, &b, weights));
            }
        }
        // The two operand pairs, loaded ahead of their products.
        for weights in [Weights::Signed, Weights::Unsigned] {
            let (a0, b0) = block(5, 44, weights);
            let (a1, b1) = block(6, 32, weights);
            let mut got = [[[0i32; 16]; 16]; 2];
            tiles.load::<0>(&a0, 44, &b0);
            tiles.load::<1>(&a1, 32, &b1);
            tiles.multiply::<1, 1>(weights);
            tiles.multiply::<2, 0>(weights);
            tiles.store::<1>(&mut got[1]);
            tiles.store::<2>(&mut got[0]);
            assert_eq!(got[0], reference(&a0, 44, &b0, weights), "{weights:?}");
            assert_eq!(got[1], reference(&a1, 32, &b1, weights), "{weights:?}");
        }
        drop(tiles);
        assert!(Tiles::configure().is_some(), "released on drop");
    }

    #[test]
    fn gemm_tiles_compute_the_exact_integer_products() {
        let Some(mut gemm) = Gemm::configure() else {
            eprintln!("no AMX tiles on this CPU: nothing to compare");
            return;
        };
        assert!(Tiles::configure().is_none() && Gemm::configure().is_none());
        let bytes = |seed: u64, n: usize| -> Vec<u8> {
            let mut state = seed;
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 33) as u8
                })
                .collect()
        };
        // Two chunks of 64 inputs: activations of 2 tiles (stride 80), weights of 2 tiles.
        let stride = 80;
        let a: Vec<Vec<u8>> = (0..4).map(|s| bytes(s, 16 * stride)).collect();
        let b: Vec<[u8; GEMM_TILE_BYTES]> = (0..4)
            .map(|s| bytes(100 + s, GEMM_TILE_BYTES).try_into().unwrap())
            .collect();
        // a[2c + i], b[2c + j]: chunk c's activation tile i and weight tile j.
        let want = |i: usize, j: usize| {
            let mut out = [[0i32; 16]; 16];
            for (r, row) in out.iter_mut().enumerate() {
                for (n, v) in row.iter_mut().enumerate() {
                    for c in 0..2 {
                        for k in 0..64 {
                            let x = i32::from(a[2 * c + i][r * stride + k] as i8);
                            let w = i32::from(b[2 * c + j][64 * (k / 4) + 4 * n + k % 4] as i8);
                            *v += x * w;
                        }
                    }
                }
            }
            out
        };
        gemm.zero::<0, 0>();
        gemm.zero::<0, 1>();
        gemm.zero::<1, 0>();
        gemm.zero::<1, 1>();
        for c in 0..2 {
            gemm.load_a::<0>(&a[2 * c], stride);
            gemm.load_a::<1>(&a[2 * c + 1], stride);
            gemm.load_b::<0>(&b[2 * c]);
            gemm.load_b::<1>(&b[2 * c + 1]);
            gemm.dot::<0, 0>();
            gemm.dot::<0, 1>();
            gemm.dot::<1, 0>();
            gemm.dot::<1, 1>();
        }
        let mut got = [[[0i32; 16]; 16]; 4];
        gemm.store::<0, 0>(&mut got[0]);
        gemm.store::<0, 1>(&mut got[1]);
        gemm.store::<1, 0>(&mut got[2]);
        gemm.store::<1, 1>(&mut got[3]);
        assert_eq!(got[0], want(0, 0));
        assert_eq!(got[1], want(0, 1));
        assert_eq!(got[2], want(1, 0));
        assert_eq!(got[3], want(1, 1));
        let short = vec![0u8; 15 * stride + 63];
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                gemm.load_a::<0>(&short, stride)
            }))
            .is_err()
        );
        drop(gemm);
        assert!(Gemm::configure().is_some(), "released on drop");
    }

    #[test]
    #[allow(clippy::float_arithmetic, reason = "the reference arithmetic")]
    fn scale_sums_rounds_as_the_reference_does() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: nothing to compare");
            return;
        }
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for _ in 0..50 {
            let sums: [[i32; 16]; 16] =
                std::array::from_fn(|_| std::array::from_fn(|_| next() as i32 % 60_961));
            let d: [f32; 16] =
                std::array::from_fn(|_| f32::from_bits(0x3800_0000 | (next() % (1 << 24))));
            let scales: [f32; 16] =
                std::array::from_fn(|_| f32::from_bits(0x3a00_0000 | (next() % (1 << 24))));
            let start: [[f32; 16]; 16] = std::array::from_fn(|_| {
                std::array::from_fn(|_| f32::from_bits(0x4000_0000 | (next() % (1 << 24))) - 3.0)
            });
            let mut acc: [std::arch::x86_64::__m512; 16] = start.map(bytemuck::cast);
            // SAFETY: the CPU has AVX-512F (checked above), the only requirement of the call.
            #[allow(unsafe_code)]
            unsafe {
                scale_sums(&mut acc, &sums, bytemuck::cast(d), &scales)
            };
            for r in 0..16 {
                let got: [f32; 16] = bytemuck::cast(acc[r]);
                for n in 0..16 {
                    let want = (sums[r][n] as f32).mul_add(d[n] * scales[r], start[r][n]);
                    assert_eq!(got[n].to_bits(), want.to_bits(), "row {r}, lane {n}");
                }
            }
        }
    }

    #[test]
    fn a_short_activation_slice_is_refused() {
        check_activations(15 * 44 + 32, 44);
        for (len, stride) in [(15 * 44 + 31, 44), (0, 0), (usize::MAX, usize::MAX / 2)] {
            let refused = std::panic::catch_unwind(|| check_activations(len, stride));
            assert!(refused.is_err(), "{len} bytes at stride {stride}");
        }
    }
}
