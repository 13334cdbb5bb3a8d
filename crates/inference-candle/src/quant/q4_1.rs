//! Q4_1 weights (`w = d * q + m`: 32 four-bit values, `d` and `m` in f16, 20 bytes per block as
//! in the file) times Q8_1 activations. The arithmetic is the module's, minimums included.

use candle_core::quantized::{GgmlDType, QTensor};

use super::{ActBlock, ActTile, BLOCK, Format, Kernel, PANEL, QMatrix};

/// One block of 16 rows. `qs[j][4i + t]` is row `i`'s file byte `4j + t`: its low nibble is the
/// row's value `4j + t`, its high nibble the value `16 + 4j + t`. Then the 16 scales and the 16
/// minimums as f16 bits.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    qs: [[u8; 64]; 4],
    d: [u16; PANEL],
    m: [u16; PANEL],
}

/// The Q4_1 format.
#[derive(Debug)]
pub struct Q41;

/// A Q4_1 weight matrix.
pub type Q41Matrix = QMatrix<Q41>;

impl Q41Matrix {
    /// From a GGUF tensor of type Q4_1; `None` for any other type.
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q4_1 {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let blocks = cols / BLOCK;
        if data.len() != rows * blocks * 20 {
            candle_core::bail!(
                "Q4_1 tensor has {} bytes, expected {}",
                data.len(),
                rows * blocks * 20
            );
        }
        let panels = super::panels(&data, rows, blocks, 20, |rows| {
            let mut p = Panel {
                qs: [[0; 64]; 4],
                d: [0; PANEL],
                m: [0; PANEL],
            };
            for (i, b) in rows.iter().enumerate() {
                let Some(b) = b else { continue };
                p.d[i] = u16::from_le_bytes([b[0], b[1]]);
                p.m[i] = u16::from_le_bytes([b[2], b[3]]);
                for (j, chunk) in p.qs.iter_mut().enumerate() {
                    chunk[4 * i..4 * i + 4].copy_from_slice(&b[4 + 4 * j..8 + 4 * j]);
                }
            }
            p
        });
        Ok(Some(QMatrix {
            rows,
            cols,
            blocks,
            panels,
        }))
    }
}

impl Format for Q41 {
    type Panel = Panel;

    fn outputs(
        kernel: Kernel,
        panels: &[Panel],
        blocks: usize,
        acts: &[ActBlock],
        tiles: &[ActTile],
        out: &mut [&mut [f32]],
    ) {
        outputs(kernel, panels, blocks, acts, tiles, out);
    }
}

#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512vnni+avx2+fma+f16c",
    "x86_64+avx2+fma+f16c"
))]
fn outputs(
    kernel: Kernel,
    panels: &[Panel],
    blocks: usize,
    acts: &[ActBlock],
    tiles: &[ActTile],
    out: &mut [&mut [f32]],
) {
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vl+avx512vnni+avx2+fma+f16c" => match kernel {
            Kernel::Amx => x86::outputs_amx(panels, blocks, acts, tiles, out),
            Kernel::Avx512Vnni => x86::outputs_avx512(panels, blocks, acts, out),
            Kernel::Avx2 => x86::outputs_avx2(panels, blocks, acts, out),
            Kernel::Scalar => scalar::outputs(panels, blocks, acts, out),
        },
        "x86_64+avx2+fma+f16c" => match kernel {
            Kernel::Scalar => scalar::outputs(panels, blocks, acts, out),
            _ => {
                let _ = tiles;
                x86::outputs_avx2(panels, blocks, acts, out)
            }
        },
        _ => {
            let _ = (kernel, tiles);
            scalar::outputs(panels, blocks, acts, out)
        },
    }
}

/// The reference kernel, one output at a time as the module documentation states.
mod scalar {
    use super::{ActBlock, Panel};
    use half::f16;

    pub(super) fn outputs(
        panels: &[Panel],
        blocks: usize,
        acts: &[ActBlock],
        out: &mut [&mut [f32]],
    ) {
        super::super::scalar_outputs(panels, blocks, acts, out, dot);
    }

    /// Row `i` of a panel row against one activation row.
    fn dot(p: &[Panel], i: usize, a: &[ActBlock]) -> f32 {
        let (mut acc, mut mins) = (0f32, 0f32);
        for (pb, ab) in p.iter().zip(a) {
            let mut sum = 0i32;
            for (j, chunk) in pb.qs.iter().enumerate() {
                for t in 0..4 {
                    let byte = chunk[4 * i + t];
                    sum += i32::from(byte & 15) * i32::from(ab.q[4 * j + t])
                        + i32::from(byte >> 4) * i32::from(ab.q[16 + 4 * j + t]);
                }
            }
            let dw = f16::from_bits(pb.d[i]).to_f32();
            let mw = f16::from_bits(pb.m[i]).to_f32();
            acc = (sum as f32).mul_add(dw * ab.d, acc);
            mins = mw.mul_add(ab.s, mins);
        }
        acc + mins
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Vectors are loaded from arrays with `bytemuck::cast` (a plain load);
    //! the intrinsics are safe to call inside functions that enable their features.

    use super::super::x86::{outputs_tiled, prefetch_ahead, prefetch_ahead_l2};
    use super::{ActBlock, ActTile, Panel};
    use bytemuck::cast;
    use std::arch::x86_64::*;

    impl super::super::x86::AmxPanel for Panel {
        const WEIGHTS: agora_amx::Weights = agora_amx::Weights::Unsigned;
        const MINIMUMS: bool = true;

        /// Rows 0-3: the low nibbles of `qs[0..4]` (values `4j..4j + 4` of each row); rows
        /// 4-7: the high nibbles (values `16 + 4j..`).
        #[inline]
        fn tile_bytes(&self, out: &mut [u8; agora_amx::WEIGHT_BYTES]) {
            for (j, q) in self.qs.iter().enumerate() {
                for (t, &v) in q.iter().enumerate() {
                    out[64 * j + t] = v & 15;
                    out[64 * (4 + j) + t] = v >> 4;
                }
            }
        }

        fn scales(&self) -> [u16; 16] {
            self.d
        }

        fn minimums(&self) -> [u16; 16] {
            self.m
        }
    }

    /// The AMX kernel (see [`super::super::x86::outputs_amx`]), or the AVX-512 one where it
    /// declines (fewer rows than `AMX_ROWS`, no tiles on this thread).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,gfni")]
    pub(super) fn outputs_amx(
        panels: &[Panel],
        blocks: usize,
        acts: &[ActBlock],
        tiles: &[ActTile],
        out: &mut [&mut [f32]],
    ) {
        let done = super::super::x86::outputs_amx(panels, blocks, acts, tiles, out);
        if done < out.len() {
            outputs_avx512(panels, blocks, &acts[done * blocks..], &mut out[done..]);
        }
    }

    /// The AVX-512 kernel. `multiversion` builds its AVX-512 version only for CPUs that also
    /// have GFNI (with the other AVX-512 extensions of Ice Lake and later, which
    /// `Kernel::best` checks too), so the tile may use it.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,gfni")]
    pub(super) fn outputs_avx512(
        panels: &[Panel],
        blocks: usize,
        acts: &[ActBlock],
        out: &mut [&mut [f32]],
    ) {
        outputs_tiled!(panels, blocks, acts, out, tile_avx512, 8)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn outputs_avx2(
        panels: &[Panel],
        blocks: usize,
        acts: &[ActBlock],
        out: &mut [&mut [f32]],
    ) {
        outputs_tiled!(panels, blocks, acts, out, tile_avx2, 4)
    }

    /// Blocks ahead whose weights are prefetched (about 5 KB). Eight-row products, cold
    /// (`--example kernels avx512-vnni 8 cold:200`), session 8: 16 ahead 158-195 billion
    /// multiply-adds/s; 8 ahead 139-168; 24 ahead 131-134, 32 (also into L2 only) 114-129.
    /// The block's lines are asked for one per activation row of the tile
    /// ([`super::super::x86::prefetch_ahead`]), not in a burst: about a tenth faster (9 of 12
    /// alternated runs).
    const AHEAD: usize = 16;

    /// Bits 4-7 of each byte moved to bits 0-3 and the rest cleared, as a GF(2) affine
    /// transform (`vgf2p8affineqb`: result bit `i` is the parity of the byte masked by matrix
    /// byte `7 - i`).
    const HIGH_NIBBLE: i64 = 0x1020_4080_0000_0000;

    /// A panel row (16 outputs, one per lane) against `R` activation rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c,gfni")]
    #[inline]
    fn tile_avx512<const R: usize, const L2: bool>(
        p: &[Panel],
        next: &[Panel],
        far: bool,
        a: [&[ActBlock]; R],
    ) -> [[f32; 16]; R] {
        let n = p.len();
        let mut a = a;
        for row in a.iter_mut() {
            *row = &row[..n];
        }
        let mask = _mm512_set1_epi8(15);
        let high = _mm512_set1_epi64(HIGH_NIBBLE);
        // Eight rows: the minimums' chains first, on their own, so that the products' loop
        // holds only its `R` accumulators besides the weights (all in registers, none spilled
        // to the stack). Fewer rows have registers to spare and take each block's minimums in
        // the products' loop, after its lines were asked for, instead of first touching every
        // block's scales in a loop of its own (from memory, in a decoding pass). The same
        // chains in the same order either way.
        let separate = R > 4;
        let mut mins = [_mm512_setzero_ps(); R];
        if separate {
            for (b, pb) in p.iter().enumerate() {
                let mw = _mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.m));
                for r in 0..R {
                    mins[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[r][b].s), mins[r]);
                }
            }
        }
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, pb) in p.iter().enumerate() {
            if !separate {
                let mw = _mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.m));
                for r in 0..R {
                    mins[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[r][b].s), mins[r]);
                }
            }
            let nibbles: [(__m512i, __m512i); 4] = std::array::from_fn(|j| {
                let q: __m512i = cast(pb.qs[j]);
                // The high nibbles by one affine transform instead of a shift and a mask:
                // the same bytes, four operations fewer per block.
                (
                    _mm512_and_si512(q, mask),
                    _mm512_gf2p8affine_epi64_epi8::<0>(q, high),
                )
            });
            let dw = _mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.d));
            for r in 0..R {
                if L2 {
                    prefetch_ahead_l2(p, next, b, AHEAD, (r, R));
                } else {
                    prefetch_ahead(p, next, b, AHEAD, (r, R), far && r == 0);
                }
                let ab = &a[r][b];
                let x: [i32; 8] = cast(ab.q);
                // Low nibbles meet values 0..16, high nibbles values 16..32: two chains.
                let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for (j, &(l, h)) in nibbles.iter().enumerate() {
                    lo = _mm512_dpbusd_epi32(lo, l, _mm512_set1_epi32(x[j]));
                    hi = _mm512_dpbusd_epi32(hi, h, _mm512_set1_epi32(x[4 + j]));
                }
                let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(ab.d));
                acc[r] = _mm512_fmadd_ps(sum, scale, acc[r]);
            }
        }
        std::array::from_fn(|r| cast(_mm512_add_ps(acc[r], mins[r])))
    }

    /// A panel row against `R` activation rows, in two halves of 8 lanes (rows 0-7, 8-15).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile_avx2<const R: usize, const L2: bool>(
        p: &[Panel],
        next: &[Panel],
        far: bool,
        a: [&[ActBlock]; R],
    ) -> [[f32; 16]; R] {
        let n = p.len();
        let mut a = a;
        for row in a.iter_mut() {
            *row = &row[..n];
        }
        let mask = _mm256_set1_epi8(15);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut mins = [[_mm256_setzero_ps(); 2]; R];
        for (b, pb) in p.iter().enumerate() {
            if L2 {
                prefetch_ahead_l2(p, next, b, AHEAD, (0, 1));
            } else {
                prefetch_ahead(p, next, b, AHEAD, (0, 1), far);
            }
            let dw: [__m256; 2] = std::array::from_fn(|h| {
                _mm256_cvtph_ps(cast::<[u16; 8], __m128i>(cast::<_, [[u16; 8]; 2]>(pb.d)[h]))
            });
            let mw: [__m256; 2] = std::array::from_fn(|h| {
                _mm256_cvtph_ps(cast::<[u16; 8], __m128i>(cast::<_, [[u16; 8]; 2]>(pb.m)[h]))
            });
            for h in 0..2 {
                let nibbles: [(__m256i, __m256i); 4] = std::array::from_fn(|j| {
                    let q: __m256i = cast::<_, [__m256i; 2]>(pb.qs[j])[h];
                    (
                        _mm256_and_si256(q, mask),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask),
                    )
                });
                for r in 0..R {
                    let ab = &a[r][b];
                    let x: [i32; 8] = cast(ab.q);
                    let mut sum = _mm256_setzero_si256();
                    for (j, &(l, hn)) in nibbles.iter().enumerate() {
                        // Products of pairs in 16 bits (at most 2 * 15 * 127, two of those
                        // added: no saturation), then pairs of pairs in 32 bits: exact.
                        let p16 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(l, _mm256_set1_epi32(x[j])),
                            _mm256_maddubs_epi16(hn, _mm256_set1_epi32(x[4 + j])),
                        );
                        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, ones));
                    }
                    let scale = _mm256_mul_ps(dw[h], _mm256_set1_ps(ab.d));
                    acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[r][h]);
                    mins[r][h] = _mm256_fmadd_ps(mw[h], _mm256_set1_ps(ab.s), mins[r][h]);
                }
            }
        }
        std::array::from_fn(|r| {
            cast([
                _mm256_add_ps(acc[r][0], mins[r][0]),
                _mm256_add_ps(acc[r][1], mins[r][1]),
            ])
        })
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {}

#[cfg(test)]
mod tests {
    use super::super::tests::{every_kernel_agrees, matches_dequantized};
    use super::*;
    use half::f16;

    #[test]
    fn matches_a_straightforward_dequantised_product() {
        // The minimum term uses s = f16(d * sum(q)) as llama.cpp does: an error of at most
        // |m * s| * 2^-11 per block, besides f32 rounding.
        matches_dequantized(
            GgmlDType::Q4_1,
            |t| Q41Matrix::from_qtensor(t).unwrap().unwrap(),
            |w, acts, c, r| {
                (0..w.blocks)
                    .map(|b| {
                        let p = &w.panels[(c / PANEL) * w.blocks + b];
                        let mw = f16::from_bits(p.m[c % PANEL]).to_f32();
                        f64::from((mw * acts[r * w.blocks + b].s).abs()) / 2048.0
                    })
                    .sum()
            },
        );
    }

    #[test]
    fn every_kernel_and_thread_count_gives_the_same_bits() {
        every_kernel_agrees(GgmlDType::Q4_1, |t| {
            Q41Matrix::from_qtensor(t).unwrap().unwrap()
        });
    }
}
