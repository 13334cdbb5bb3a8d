//! Q8_0 weights (`w = d * q`: 32 eight-bit values and `d` in f16, 34 bytes per block as in the
//! file) times Q8_0 activations. SmolLM2's GGUF keeps its embedding matrix, which is also the
//! output projection (the largest matrix), in Q8_0. The arithmetic is the module's.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes: the panels hold `q_w + 128` and the AVX-512
//! kernel starts each block's sum at `-128 * sum(q_x)`, so the integer is the same. AVX2 takes
//! `|q_w|` and `q_x` with `q_w`'s sign, as llama.cpp does.

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::{ActBlock, ActTile, BLOCK, Format, Kernel, PANEL, QMatrix};

/// Bytes per block in the file.
const BLOCK_BYTES: usize = 34;

/// One block of 16 rows. `qs[j][4i + t]` is row `i`'s value `4j + t` plus 128, as an unsigned
/// byte; then the 16 scales as f16 bits.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    qs: [[u8; 64]; 8],
    d: [u16; PANEL],
}

impl Panel {
    /// Lane `i`'s weight `k` of the block (its integer; the weight is that times
    /// [`Panel::scale`]).
    pub(super) fn weight(&self, i: usize, k: usize) -> i8 {
        (self.qs[k / 4][4 * i + k % 4] ^ 0x80) as i8
    }

    /// Lane `i`'s scale.
    pub(super) fn scale(&self, i: usize) -> f32 {
        f16::from_bits(self.d[i]).to_f32()
    }
}

/// The Q8_0 format.
#[derive(Debug)]
pub struct Q80;

/// A Q8_0 weight matrix.
pub type Q80Matrix = QMatrix<Q80>;

impl Q80Matrix {
    /// From a GGUF tensor of type Q8_0; `None` for any other type.
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q8_0 {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let blocks = cols / BLOCK;
        if data.len() != rows * blocks * BLOCK_BYTES {
            candle_core::bail!(
                "Q8_0 tensor has {} bytes, expected {}",
                data.len(),
                rows * blocks * BLOCK_BYTES
            );
        }
        let panels = super::panels(&data, rows, blocks, BLOCK_BYTES, |rows| {
            let mut p = Panel {
                qs: [[128; 64]; 8],
                d: [0; PANEL],
            };
            for (i, b) in rows.iter().enumerate() {
                let Some(b) = b else { continue };
                p.d[i] = u16::from_le_bytes([b[0], b[1]]);
                for (j, chunk) in p.qs.iter_mut().enumerate() {
                    for t in 0..4 {
                        chunk[4 * i + t] = b[2 + 4 * j + t] ^ 0x80;
                    }
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

    /// One row's weights, dequantized (the embedding of a token).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let (g, i) = (r / PANEL, r % PANEL);
        let mut out = Vec::with_capacity(self.blocks * BLOCK);
        for p in &self.panels[g * self.blocks..(g + 1) * self.blocks] {
            let d = f16::from_bits(p.d[i]).to_f32();
            for chunk in &p.qs {
                out.extend(
                    chunk[4 * i..4 * i + 4]
                        .iter()
                        .map(|&u| f32::from((u ^ 0x80) as i8) * d),
                );
            }
        }
        out.truncate(self.cols);
        out
    }
}

impl Format for Q80 {
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
        let mut acc = 0f32;
        for (pb, ab) in p.iter().zip(a) {
            let mut sum = 0i32;
            for (j, chunk) in pb.qs.iter().enumerate() {
                for t in 0..4 {
                    let w = (chunk[4 * i + t] ^ 0x80) as i8;
                    sum += i32::from(w) * i32::from(ab.q[4 * j + t]);
                }
            }
            let dw = f16::from_bits(pb.d[i]).to_f32();
            acc = (sum as f32).mul_add(dw * ab.d, acc);
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Vectors are loaded from arrays with `bytemuck::cast` (a plain load);
    //! the intrinsics are safe to call inside functions that enable their features.

    use super::super::x86::{each_row, outputs_tiled, prefetch_ahead};
    use super::{ActBlock, ActTile, Panel};
    use bytemuck::cast;
    use std::arch::x86_64::*;

    impl super::super::x86::AmxPanel for Panel {
        const WEIGHTS: agora_amx::Weights = agora_amx::Weights::Signed;
        const MINIMUMS: bool = false;

        /// `qs` with 128 taken back off each value: the tiles multiply signed by signed.
        #[inline]
        fn tile_bytes(&self, out: &mut [u8; agora_amx::WEIGHT_BYTES]) {
            for (j, q) in self.qs.iter().enumerate() {
                for (t, &v) in q.iter().enumerate() {
                    out[64 * j + t] = v ^ 0x80;
                }
            }
        }

        fn scales(&self) -> [u16; 16] {
            self.d
        }

        fn minimums(&self) -> [u16; 16] {
            [0; 16]
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

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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

    /// Blocks ahead whose weights are prefetched (about 5 KB, as for Q4_1). Unlike Q4_1's, these
    /// tiles never ask L2 further ahead (their `far` argument and `L2` parameter are ignored):
    /// the output matrix at one row, as decoding reads it from memory, gained nothing
    /// (`--example kernels avx512-vnni 1 cold:200`: 26.8-30.6 billion multiply-adds/s either
    /// way), one stream's generation lost about 5%, and a product whose weights sit in L2 lost
    /// about a tenth. Eight rows asking L2 only, as Q4_1's do (`x86::L2_ROWS`), made its kernel
    /// about 20% faster at the output matrix's shape but 8 streams only about 1% (inside the
    /// noise; session 20).
    const AHEAD: usize = 10;

    /// A panel row (16 outputs, one per lane) against `R` activation rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    fn tile_avx512<const R: usize, const L2: bool>(
        p: &[Panel],
        next: &[Panel],
        _far: bool,
        a: [&[ActBlock]; R],
    ) -> [[f32; 16]; R] {
        let n = p.len();
        let mut a = a;
        for row in a.iter_mut() {
            *row = &row[..n];
        }
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, pb) in p.iter().enumerate() {
            let w: [__m512i; 8] = std::array::from_fn(|j| cast(pb.qs[j]));
            let dw = _mm512_cvtph_ps(cast::<[u16; 16], __m256i>(pb.d));
            each_row!(R, |r| {
                prefetch_ahead(p, next, b, AHEAD, (r, R), false);
                let ab = &a[r][b];
                let x: [i32; 8] = cast(ab.q);
                // Two chains of four, the first starting at the correction for the + 128.
                let mut lo = _mm512_set1_epi32(ab.offset);
                let mut hi = _mm512_setzero_si512();
                for j in 0..4 {
                    lo = _mm512_dpbusd_epi32(lo, w[j], _mm512_set1_epi32(x[j]));
                    hi = _mm512_dpbusd_epi32(hi, w[4 + j], _mm512_set1_epi32(x[4 + j]));
                }
                let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(ab.d));
                acc[r] = _mm512_fmadd_ps(sum, scale, acc[r]);
            });
        }
        std::array::from_fn(|r| cast(acc[r]))
    }

    /// A panel row against `R` activation rows, in two halves of 8 lanes (rows 0-7, 8-15).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tile_avx2<const R: usize, const L2: bool>(
        p: &[Panel],
        next: &[Panel],
        _far: bool,
        a: [&[ActBlock]; R],
    ) -> [[f32; 16]; R] {
        let n = p.len();
        let mut a = a;
        for row in a.iter_mut() {
            *row = &row[..n];
        }
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (b, pb) in p.iter().enumerate() {
            prefetch_ahead(p, next, b, AHEAD, (0, 1), false);
            let dw: [__m256; 2] = std::array::from_fn(|h| {
                _mm256_cvtph_ps(cast::<[u16; 8], __m128i>(cast::<_, [[u16; 8]; 2]>(pb.d)[h]))
            });
            for h in 0..2 {
                // Back to signed values: their magnitudes, and their signs to put on q_x.
                let w: [(__m256i, __m256i); 8] = std::array::from_fn(|j| {
                    let signed = _mm256_xor_si256(cast::<_, [__m256i; 2]>(pb.qs[j])[h], flip);
                    (_mm256_abs_epi8(signed), signed)
                });
                for r in 0..R {
                    let ab = &a[r][b];
                    let x: [i32; 8] = cast(ab.q);
                    let mut sum = _mm256_setzero_si256();
                    for (j, &(abs, signs)) in w.iter().enumerate() {
                        // |q_w| * (q_x with q_w's sign): pairs in 16 bits (at most
                        // 2 * 128 * 127, no saturation), then pairs of pairs in 32 bits: exact.
                        let xj = _mm256_sign_epi8(_mm256_set1_epi32(x[j]), signs);
                        let p16 = _mm256_maddubs_epi16(abs, xj);
                        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, ones));
                    }
                    let scale = _mm256_mul_ps(dw[h], _mm256_set1_ps(ab.d));
                    acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[r][h]);
                }
            }
        }
        std::array::from_fn(|r| cast(acc[r]))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {}

#[cfg(test)]
mod tests {
    use super::super::tests::{every_kernel_agrees, matches_dequantized, quantized};
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_straightforward_dequantised_product() {
        matches_dequantized(
            GgmlDType::Q8_0,
            |t| Q80Matrix::from_qtensor(t).unwrap().unwrap(),
            |_, _, _, _| 0.0,
        );
    }

    #[test]
    fn rows_dequantize_as_candle_does() {
        let q = quantized(40, 96, 3, GgmlDType::Q8_0);
        let ours = Q80Matrix::from_qtensor(&q).unwrap().unwrap();
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, row) in deq.iter().enumerate() {
            assert_eq!(&ours.row(r), row, "row {r}");
        }
    }

    #[test]
    fn every_kernel_and_thread_count_gives_the_same_bits() {
        every_kernel_agrees(GgmlDType::Q8_0, |t| {
            Q80Matrix::from_qtensor(t).unwrap().unwrap()
        });
    }
}
