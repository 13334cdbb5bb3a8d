//! The argmax of a Q8_0 product, screened with proven bounds: for each activation row, its
//! largest output and a given output's value, the same numbers the whole product gives, bit for
//! bit, without computing every output. This is what a validator's greedy check asks of the
//! output matrix (49,152 outputs a row): whether the claimed token is the argmax, and how far
//! below it lies.
//!
//! # How
//!
//! 1. The claimed (target) output `L_t` of each row, computed exactly as the product computes
//!    it (the module's arithmetic; a panel row of 16 outputs through the AVX-512 or AVX2
//!    kernel).
//! 2. A *screen* of every output: the weights requantized once to 8 bits with one scale per
//!    output row (`W' = s_v * p`, `p = round(W / s_v)`, `s_v = max|W| / 127`), the row's
//!    quantized activations requantized to 8 bits with one scale per row
//!    (`h' = sigma * a`), and `S = sum p * a` as one integer over the whole row, with no float
//!    step per block (the product's float steps, one per block, are much of its cost): on AMX
//!    tiles, two tiles of 16 rows by two panel rows of 16 outputs, 64 inputs a step
//!    ([`agora_amx::Gemm`]); on a CPU without them but with AVX-512 VNNI, `vpdpbusd` on eight
//!    rows by two panel rows, four inputs a step (each sum started at `-128 sum p`, as the
//!    activations go in as the unsigned `a + 128`). Either way the same integers.
//! 3. An output `v` is a *candidate* when its screened value plus a proven bound on its error
//!    reaches `L_t`. Only candidates get their exact outputs (their panel row's 16, as in 1).
//!    The row's argmax is the first largest among the candidates and the target.
//!
//! # Why the answer is exact
//!
//! Let `W` be output `v`'s weights (`d_b * q`) and `h` the row's quantized activations
//! (`d_x * q_x`), as real numbers, and `T = sum W h` their exact product. The product computes
//! `L_v` from `T` with one rounding per block's scale and one per fused multiply-add, so
//! `|L_v - T| <= g * sum |W| |h| <= g * ||W|| ||h||` with `g = (blocks + 2) * 2^-24 * 1.01`
//! (recursive summation's bound, with the scales' roundings; no product of two scales comes near
//! f32's subnormals). Writing `W - W'` and `h - h'` for the requantization errors,
//! `T - s_v sigma S = sum (W - W') h + sum W' (h - h')`, so by Cauchy-Schwarz
//! `|T - s_v sigma S| <= E_v H + N_v D`, with `E_v = ||W - W'||`, `N_v = ||W'||` (per output,
//! computed once in f64 and rounded up to f32) and `H = ||h||`, `D = ||h - h'||` (per row, the
//! same way); `E_v` is stored with `g (N_v + E_v)` added, which covers the first bound since
//! `||W|| <= N_v + E_v`. Hence `L_v - L_t <= s_v sigma S + E_v H + N_v D - L_t =: Z`.
//!
//! The screen evaluates `Z` in f32 as `fma(S * s_v, sigma, fma(E_v, H, fma(N_v, D, -L_t)))`:
//! four roundings, each at most `2^-24` of a magnitude no larger than
//! `M = N_max (H + 2 D) + E_max H + |L_t|` (as `|s_v sigma S| <= N_v ||h'|| <= N_v (H + D)`;
//! `S` is below `2^24` in magnitude for rows of fewer than 1,040 inputs, so converting it is
//! exact, and a wider row's one more rounding is inside the same budget). The computed `z`
//! is within `2^-21 M` of `Z`, and `v` is dropped only when `z < -(2^-18 M + 2^-100)`: then
//! `Z < 0` and `L_v < L_t`, so `v` is neither the argmax nor tied with it. Every output that
//! could be is a candidate, and candidates' values are the product's own.
//!
//! A row is left to the caller (to compute in full) when its numbers are not finite or `M`
//! exceeds `2^100` (no f32 step may overflow), or when it has more than [`MOST_CANDIDATES`]
//! candidates (a claimed token far below the argmax, as a forged answer's are, makes most of
//! the vocabulary candidates). A matrix whose weights are not finite gets no screen.
//!
//! On SmolLM2's output matrix and 512 rows of four greedy answers (session 23, a NumPy model of
//! these bounds): the bound averaged 4.7 nats (the screened values' real error was at most
//! 1.6), and rows had 10.5 candidates on average, at most 373.

use rayon::prelude::*;

use super::q8_0::{Q80, Q80Matrix};
use super::{ActBlock, BLOCK, Format, Kernel, PANEL, quantize_rows};

/// Candidates beyond which a row is left to the caller to compute in full: a candidate costs a
/// panel row's exact outputs (16 outputs over the row's blocks), a row in full 3,072 of them.
pub const MOST_CANDIDATES: usize = 512;

/// Inputs per step of the screen's sums (a tile row of 64 bytes).
const CHUNK: usize = 64;

/// Bytes of one chunk of 16 outputs' requantized weights, in the tiles' layout.
const TILE_BYTES: usize = agora_amx::GEMM_TILE_BYTES;

/// Activation rows the VNNI screen takes at a time (each against two panel rows: sixteen
/// sums in registers).
const VNNI_ROWS: usize = 8;

/// Four inputs of each of [`VNNI_ROWS`] activation rows, unsigned (`a + 128`): one step of
/// the VNNI screen.
type Step = [[u8; 4]; VNNI_ROWS];

/// One chunk of 16 activation rows, requantized (`a`), in the tiles' layout (rows 64 bytes
/// apart).
type ActRows = [[i8; CHUNK]; 16];

/// The screen of a Q8_0 matrix: its weights requantized to one scale per output, and the bounds
/// on what that changes ([`Screen::new`]). About as large as the matrix (SmolLM2's output
/// matrix: 28 MiB).
#[derive(Debug)]
pub struct Screen {
    rows: usize,
    blocks: usize,
    /// Chunks of 64 inputs per row (the last zero-padded).
    chunks: usize,
    /// Panel row `g`'s chunk `c` at `g * chunks + c` (an even count of panel rows, the last
    /// zeros when the matrix has an odd count): 16 rows of 64 bytes, row `k` holding
    /// inputs `4k..4k + 4` of each of the 16 outputs (output `i` at bytes `4i..4i + 4`).
    weights: Vec<[u8; TILE_BYTES]>,
    /// Per output (padded to whole panels with zeros): the scale `s_v`.
    scale: Vec<f32>,
    /// Per output: `E_v` and the product's rounding (see the module documentation), rounded up.
    err: Vec<f32>,
    /// Per output: `N_v = ||W'||`, rounded up.
    norm: Vec<f32>,
    /// Per output: `-128 * sum p`, the correction the VNNI screen's unsigned activations
    /// (`a + 128`) need.
    offset: Vec<i32>,
    err_max: f64,
    norm_max: f64,
}

/// What the screen found for one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Best {
    /// The largest output (the first of equal largest ones).
    pub id: u32,
    /// Its value.
    pub logit: f32,
    /// The target's value.
    pub target: f32,
}

/// The smallest f32 at or above `x` (finite, non-negative).
fn up(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

/// `x` rounded to the nearest integer (halves away from zero), within -127..=127.
fn to_i8(x: f64) -> i8 {
    x.round().clamp(-127.0, 127.0) as i8
}

/// A norm computed in f64 from a sum of squares, with room for that sum's roundings.
fn norm(sum_squares: f64) -> f64 {
    sum_squares.sqrt() * (1.0 + 1e-9)
}

impl Screen {
    /// The screen of `m`; `None` when a weight is not finite.
    pub fn new(m: &Q80Matrix) -> Option<Screen> {
        let blocks = m.blocks;
        let chunks = (blocks * BLOCK).div_ceil(CHUNK);
        let groups = m.panels.len() / blocks.max(1);
        // The product's rounding, relative to ||W|| ||h|| (see the module documentation).
        let g = (blocks as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0 * 1.01;
        type Group = (Vec<[u8; TILE_BYTES]>, [[f32; PANEL]; 3], [i32; PANEL]);
        // On the calling thread only, not rayon's: a pass that needs the screen while another
        // thread builds it waits for it on a pool thread, and a build that needed the pool's
        // threads could then wait for them forever.
        let parts: Vec<Option<Group>> = (0..groups)
            .map(|p| {
                let panels = &m.panels[p * blocks..(p + 1) * blocks];
                let mut tiles = vec![[0u8; TILE_BYTES]; chunks];
                let mut out = [[0f32; PANEL]; 3];
                let mut offset = [0i32; PANEL];
                let mut w = vec![0f64; blocks * BLOCK];
                for i in 0..PANEL {
                    for (k, v) in w.iter_mut().enumerate() {
                        let pb = &panels[k / BLOCK];
                        *v = f64::from(pb.weight(i, k % BLOCK)) * f64::from(pb.scale(i));
                    }
                    let amax = w.iter().fold(0f64, |a, v| a.max(v.abs()));
                    if !amax.is_finite() {
                        return None;
                    }
                    let s = if amax > 0.0 {
                        (amax / 127.0) as f32
                    } else {
                        1.0
                    };
                    let (mut e2, mut n2) = (0f64, 0f64);
                    for (k, &v) in w.iter().enumerate() {
                        let p = to_i8(v / f64::from(s));
                        let wp = f64::from(p) * f64::from(s);
                        e2 += (v - wp) * (v - wp);
                        n2 += wp * wp;
                        offset[i] -= 128 * i32::from(p);
                        let b = k % CHUNK;
                        tiles[k / CHUNK][64 * (b / 4) + 4 * i + b % 4] = p as u8;
                    }
                    let (e, nv) = (norm(e2), norm(n2));
                    out[0][i] = s;
                    out[1][i] = up(e + g * (nv + e));
                    out[2][i] = up(nv);
                }
                Some((tiles, out, offset))
            })
            .collect();
        let mut screen = Screen {
            rows: m.rows,
            blocks,
            chunks,
            weights: Vec::with_capacity((groups + 1) * chunks),
            scale: Vec::with_capacity(groups * PANEL),
            err: Vec::with_capacity(groups * PANEL),
            norm: Vec::with_capacity(groups * PANEL),
            offset: Vec::with_capacity(groups * PANEL),
            err_max: 0.0,
            norm_max: 0.0,
        };
        for part in parts {
            let (tiles, [s, e, n], offset) = part?;
            screen.weights.extend(tiles);
            screen.scale.extend(s);
            screen.err.extend(e);
            screen.norm.extend(n);
            screen.offset.extend(offset);
        }
        if groups % 2 == 1 {
            // A zero panel row, so that panel rows go in pairs (its lanes are never outputs).
            screen.weights.extend(vec![[0u8; TILE_BYTES]; chunks]);
            for v in [&mut screen.scale, &mut screen.err, &mut screen.norm] {
                v.extend([0f32; PANEL]);
            }
            screen.offset.extend([0; PANEL]);
        }
        screen.err_max = screen.err.iter().fold(0f64, |a, &e| a.max(f64::from(e)));
        screen.norm_max = screen.norm.iter().fold(0f64, |a, &n| a.max(f64::from(n)));
        if !(screen.err_max.is_finite() && screen.norm_max.is_finite()) {
            return None;
        }
        Some(screen)
    }

    /// For each row of `x` (rows of the matrix's inputs) and its target output (`targets`, one
    /// per row, each below the matrix's outputs): the row's largest output and the target's
    /// value, as `m`'s product computes them (`m` must be the matrix this screen was made
    /// from). `None` for a row left to the caller (see the module documentation).
    /// [`Kernel::Amx`] screens on the tiles (with `vpdpbusd` on a thread that gets none),
    /// [`Kernel::Avx512Vnni`] with `vpdpbusd`; any other kernel with a scalar loop (for tests:
    /// the same candidates, far slower).
    pub fn argmax(
        &self,
        m: &Q80Matrix,
        kernel: Kernel,
        x: &[f32],
        targets: &[u32],
    ) -> Option<Vec<Option<Best>>> {
        let n = targets.len();
        if n == 0 {
            return Some(Vec::new());
        }
        if m.blocks != self.blocks
            || m.rows != self.rows
            || x.len() != n * m.cols
            || targets.iter().any(|&t| t as usize >= self.rows)
        {
            return None;
        }
        let blocks = self.blocks;
        let mut acts = Vec::new();
        quantize_rows(x, m.cols, m.cols, blocks, &mut acts);
        let exact_kernel = kernel.min(Kernel::Avx512Vnni);
        let exact = |r: usize, group: usize| -> [f32; PANEL] {
            let mut out = [0f32; PANEL];
            let width = (self.rows - group * PANEL).min(PANEL);
            Q80::outputs(
                exact_kernel,
                &m.panels[group * blocks..(group + 1) * blocks],
                blocks,
                &acts[r * blocks..(r + 1) * blocks],
                &[],
                &mut [&mut out[..width]],
            );
            out
        };
        // Each row's requantized activations and bounds.
        let chunks = self.chunks;
        let (bounds, requantized): (Vec<RowBound>, Vec<Vec<i8>>) = acts
            .par_chunks(blocks)
            .zip(targets.par_iter())
            .enumerate()
            .map(|(r, (row, &t))| {
                let target = exact(r, t as usize / PANEL)[t as usize % PANEL];
                RowBound::new(self, row, target)
            })
            .unzip();
        // The requantized activations in the layout each screen takes, made when first asked
        // for (an AMX CPU's passes need the VNNI layout only on a thread without tiles).
        let (tiles, unsigned) = (std::sync::OnceLock::new(), std::sync::OnceLock::new());
        let tiles = || tiles.get_or_init(|| tile_layout(&requantized, chunks));
        let unsigned = || unsigned.get_or_init(|| vnni_layout(&requantized, chunks));
        // The screen, pairs of output panel rows split among the threads.
        let pairs = self.weights.len() / (2 * chunks).max(1);
        let tasks = (4 * rayon::current_num_threads()).clamp(1, pairs.max(1));
        let found: Vec<Option<Vec<Candidates>>> = (0..tasks)
            .into_par_iter()
            .map(|k| {
                let range = 2 * (k * pairs / tasks)..2 * ((k + 1) * pairs / tasks);
                let mut found = Vec::new();
                let done = match kernel {
                    Kernel::Amx => {
                        amx_screen(self, range.clone(), tiles(), &bounds, &mut found)
                            || vnni_screen(self, range, unsigned(), &bounds, &mut found)
                    }
                    Kernel::Avx512Vnni => vnni_screen(self, range, unsigned(), &bounds, &mut found),
                    _ => {
                        scalar_screen(self, range, tiles(), &bounds, &mut found);
                        true
                    }
                };
                done.then_some(found)
            })
            .collect();
        let mut per_row: Vec<Vec<(u32, u16)>> = vec![Vec::new(); n];
        for c in found.into_iter().collect::<Option<Vec<_>>>()?.concat() {
            per_row[c.row as usize].push((c.group, c.lanes));
        }
        Some(
            per_row
                .into_par_iter()
                .zip(targets.par_iter())
                .enumerate()
                .map(|(r, (groups, &t))| {
                    let b = &bounds[r];
                    let count: usize = groups.iter().map(|&(_, l)| l.count_ones() as usize).sum();
                    if !b.screened || count > MOST_CANDIDATES {
                        return None;
                    }
                    let mut values: Vec<(u32, f32)> = vec![(t, b.target)];
                    for (group, lanes) in groups {
                        let out = exact(r, group as usize);
                        for (i, &v) in out.iter().enumerate() {
                            let id = group * PANEL as u32 + i as u32;
                            if lanes >> i & 1 == 1 && id != t {
                                values.push((id, v));
                            }
                        }
                    }
                    values.sort_unstable_by_key(|&(id, _)| id);
                    let mut best = values[0];
                    for &(id, v) in &values {
                        if v.is_nan() {
                            return None;
                        }
                        if v > best.1 {
                            best = (id, v);
                        }
                    }
                    Some(Best {
                        id: best.0,
                        logit: best.1,
                        target: b.target,
                    })
                })
                .collect(),
        )
    }

    /// The lanes of panel row `group` that are outputs (a last, partial panel's others are
    /// padding, as is the whole of a panel row added to make pairs).
    fn lanes(&self, group: usize) -> u16 {
        let width = self.rows.saturating_sub(group * PANEL).min(PANEL);
        ((1u32 << width) - 1) as u16
    }
}

/// Requantized activation rows (`chunks` chunks of inputs each) in the tiles' layout: tiles of
/// 16 rows, a last one padded with zero rows.
fn tile_layout(requantized: &[Vec<i8>], chunks: usize) -> Vec<ActRows> {
    let mut tiles = vec![[[0i8; CHUNK]; 16]; requantized.len().div_ceil(32) * 2 * chunks];
    for (r, a) in requantized.iter().enumerate() {
        for (c, part) in a.chunks(CHUNK).enumerate() {
            tiles[(r / 16) * chunks + c][r % 16][..part.len()].copy_from_slice(part);
        }
    }
    tiles
}

/// The same rows for `vpdpbusd`, each `a + 128` as an unsigned byte (padding inputs and rows
/// 128: zeros), in groups of [`VNNI_ROWS`] rows: for each step of four inputs, each row's four.
fn vnni_layout(requantized: &[Vec<i8>], chunks: usize) -> Vec<Step> {
    let steps = chunks * CHUNK / 4;
    let mut u = vec![[[128u8; 4]; VNNI_ROWS]; requantized.len().div_ceil(VNNI_ROWS) * steps];
    for (r, a) in requantized.iter().enumerate() {
        let group = &mut u[(r / VNNI_ROWS) * steps..];
        for (step, four) in group.iter_mut().zip(a.chunks(4)) {
            for (u, &v) in step[r % VNNI_ROWS].iter_mut().zip(four) {
                *u = (v as u8) ^ 0x80;
            }
        }
    }
    u
}

/// One row's numbers for the screen's test, each as the module documentation names it.
#[derive(Clone, Copy, Debug)]
struct RowBound {
    /// The requantized activations' scale.
    sigma: f32,
    /// `H`, rounded up.
    h: f32,
    /// `D`, rounded up.
    d: f32,
    /// `-L_t`.
    neg_target: f32,
    /// An output is a candidate when its `z` is at least this: `-(2^-18 M + 2^-100)`.
    floor: f32,
    target: f32,
    /// Whether the row is screened (its numbers finite and small enough).
    screened: bool,
}

impl RowBound {
    /// The row's numbers, and its requantized activations `a` (as many as the row's values).
    fn new(screen: &Screen, row: &[ActBlock], target: f32) -> (RowBound, Vec<i8>) {
        let h: Vec<f64> = row
            .iter()
            .flat_map(|b| b.q.iter().map(|&q| f64::from(q) * f64::from(b.d)))
            .collect();
        let amax = h.iter().fold(0f64, |a, v| a.max(v.abs()));
        let sigma = if amax > 0.0 && amax.is_finite() {
            (amax / 127.0) as f32
        } else {
            1.0
        };
        let (mut h2, mut d2) = (0f64, 0f64);
        let mut requantized = Vec::with_capacity(h.len());
        for &v in &h {
            let a = to_i8(v / f64::from(sigma));
            let e = v - f64::from(a) * f64::from(sigma);
            h2 += v * v;
            d2 += e * e;
            requantized.push(a);
        }
        let (hn, dn) = (norm(h2), norm(d2));
        let m = screen.norm_max * (hn + 2.0 * dn) + screen.err_max * hn + f64::from(target).abs();
        let screened = target.is_finite() && m.is_finite() && m < 2f64.powi(100);
        let bound = RowBound {
            sigma,
            h: if screened { up(hn) } else { 0.0 },
            d: if screened { up(dn) } else { 0.0 },
            neg_target: -target,
            floor: if screened {
                -up(m * 2f64.powi(-18) + 2f64.powi(-100))
            } else {
                0.0
            },
            target,
            screened,
        };
        (bound, requantized)
    }

    /// Whether an output with screened sum `s` and numbers `(scale, err, norm)` is a candidate
    /// (the reference of the vector test in `x86::screen`, the same operations in order).
    fn candidate(&self, s: i32, scale: f32, err: f32, norm: f32) -> bool {
        let c = norm.mul_add(self.d, self.neg_target);
        let c = err.mul_add(self.h, c);
        let z = (s as f32 * scale).mul_add(self.sigma, c);
        z >= self.floor
    }
}

/// Candidates of one row in one panel row: `lanes` bit `i` for output `16 group + i`.
#[derive(Clone, Copy, Debug)]
struct Candidates {
    row: u32,
    group: u32,
    lanes: u16,
}

/// The screen of panel rows `groups` with plain loops.
fn scalar_screen(
    screen: &Screen,
    groups: std::ops::Range<usize>,
    tiles: &[ActRows],
    bounds: &[RowBound],
    found: &mut Vec<Candidates>,
) {
    let chunks = screen.chunks;
    for g in groups {
        let w = &screen.weights[g * chunks..(g + 1) * chunks];
        for (r, b) in bounds.iter().enumerate() {
            if !b.screened {
                continue;
            }
            let mut lanes = 0u16;
            for i in 0..PANEL {
                let mut s = 0i32;
                for (k, wb) in w.iter().enumerate() {
                    let a = &tiles[(r / 16) * chunks + k][r % 16];
                    for (j, &x) in a.iter().enumerate() {
                        s += i32::from(x) * i32::from(wb[64 * (j / 4) + 4 * i + j % 4] as i8);
                    }
                }
                let v = g * PANEL + i;
                if b.candidate(s, screen.scale[v], screen.err[v], screen.norm[v]) {
                    lanes |= 1 << i;
                }
            }
            lanes &= screen.lanes(g);
            if lanes != 0 {
                found.push(Candidates {
                    row: r as u32,
                    group: g as u32,
                    lanes,
                });
            }
        }
    }
}

/// The screen of panel rows `groups` (whole pairs) on the tiles ([`x86::screen`]); `false`
/// when this thread has no tiles or the CPU no AVX-512.
#[multiversion::multiversion(targets("x86_64+avx512f"))]
fn amx_screen(
    screen: &Screen,
    groups: std::ops::Range<usize>,
    tiles: &[ActRows],
    bounds: &[RowBound],
    found: &mut Vec<Candidates>,
) -> bool {
    multiversion::target::match_target! {
        "x86_64+avx512f" => {
            let Some(mut amx) = agora_amx::Gemm::configure() else {
                return false;
            };
            x86::screen(&mut amx, screen, groups, tiles, bounds, found);
            true
        },
        _ => {
            let _ = (screen, groups, tiles, bounds, found);
            false
        },
    }
}

/// The screen of panel rows `groups` (whole pairs) with `vpdpbusd` ([`x86::screen_vnni`]),
/// `acts` the rows' unsigned activations; `false` when the CPU has no AVX-512 VNNI (or, which
/// cannot happen, when `groups` or `acts` do not fit the screen: then no row is answered).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vnni"))]
fn vnni_screen(
    screen: &Screen,
    groups: std::ops::Range<usize>,
    acts: &[Step],
    bounds: &[RowBound],
    found: &mut Vec<Candidates>,
) -> bool {
    multiversion::target::match_target! {
        "x86_64+avx512f+avx512bw+avx512vnni" => x86::screen_vnni(screen, groups, acts, bounds, found),
        _ => {
            let _ = (screen, groups, acts, bounds, found);
            false
        },
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::x86::each_row;
    use super::{ActRows, CHUNK, Candidates, RowBound, Screen, Step, VNNI_ROWS};
    use agora_amx::Gemm;
    use bytemuck::cast;
    use std::arch::x86_64::*;

    /// The screen of panel rows `groups` (whole pairs) on the tiles: two panel rows by two
    /// tiles of 16 activation rows at a time (each operand loaded serves two products), the
    /// sums accumulated over every chunk of 64 inputs, then tested 16 outputs to a vector (the
    /// operations of `RowBound::candidate`, in its order).
    #[target_feature(enable = "avx512f")]
    pub(super) fn screen(
        amx: &mut Gemm,
        screen: &Screen,
        groups: std::ops::Range<usize>,
        tiles: &[ActRows],
        bounds: &[RowBound],
        found: &mut Vec<Candidates>,
    ) {
        let chunks = screen.chunks;
        let row_tiles = tiles.len() / chunks.max(1);
        let mut sums = [[[0i32; 16]; 16]; 4];
        let a = |t: usize, c: usize| bytemuck::bytes_of(&tiles[t * chunks + c]);
        for g in groups.step_by(2) {
            let w = |j: usize, c: usize| &screen.weights[(g + j) * chunks + c];
            let out = [Out::of(screen, g), Out::of(screen, g + 1)];
            for rt in (0..row_tiles).step_by(2) {
                amx.zero::<0, 0>();
                amx.zero::<0, 1>();
                amx.zero::<1, 0>();
                amx.zero::<1, 1>();
                for c in 0..chunks {
                    amx.load_a::<0>(a(rt, c), 64);
                    amx.load_a::<1>(a(rt + 1, c), 64);
                    amx.load_b::<0>(w(0, c));
                    amx.load_b::<1>(w(1, c));
                    amx.dot::<0, 0>();
                    amx.dot::<0, 1>();
                    amx.dot::<1, 0>();
                    amx.dot::<1, 1>();
                }
                amx.store::<0, 0>(&mut sums[0]);
                amx.store::<0, 1>(&mut sums[1]);
                amx.store::<1, 0>(&mut sums[2]);
                amx.store::<1, 1>(&mut sums[3]);
                for (k, tile) in sums.iter().enumerate() {
                    let (i, j) = (k / 2, k % 2);
                    for (lane, s) in tile.iter().enumerate() {
                        let r = (rt + i) * 16 + lane;
                        let Some(b) = bounds.get(r) else { break };
                        test(cast(*s), b, out[j], (r, g + j), found);
                    }
                }
            }
        }
    }

    /// A panel row's numbers for the test: each output's `s_v`, `E_v` and `N_v`, and which
    /// lanes are outputs.
    #[derive(Clone, Copy)]
    struct Out {
        scale: __m512,
        err: __m512,
        norm: __m512,
        lanes: u16,
    }

    impl Out {
        #[target_feature(enable = "avx512f")]
        fn of(screen: &Screen, group: usize) -> Out {
            let vector = |v: &[f32]| -> __m512 {
                let at = group * 16;
                cast(<[f32; 16]>::try_from(&v[at..at + 16]).unwrap_or_default())
            };
            Out {
                scale: vector(&screen.scale),
                err: vector(&screen.err),
                norm: vector(&screen.norm),
                lanes: screen.lanes(group),
            }
        }
    }

    /// The test of 16 outputs' sums `s` (panel row `at.1`) for row `at.0`: the operations of
    /// `RowBound::candidate`, in its order; its candidates pushed onto `found`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn test(s: __m512i, b: &RowBound, out: Out, at: (usize, usize), found: &mut Vec<Candidates>) {
        if !b.screened {
            return;
        }
        let c = _mm512_fmadd_ps(out.norm, _mm512_set1_ps(b.d), _mm512_set1_ps(b.neg_target));
        let c = _mm512_fmadd_ps(out.err, _mm512_set1_ps(b.h), c);
        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(s), out.scale);
        let z = _mm512_fmadd_ps(y, _mm512_set1_ps(b.sigma), c);
        let hit = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(z, _mm512_set1_ps(b.floor)) & out.lanes;
        if hit != 0 {
            found.push(Candidates {
                row: at.0 as u32,
                group: at.1 as u32,
                lanes: hit,
            });
        }
    }

    /// The screen of panel rows `groups` (whole pairs) with `vpdpbusd`: two panel rows by
    /// [`VNNI_ROWS`] activation rows at a time, sixteen sums in registers, four inputs a step
    /// (a weight vector holds four inputs of each of 16 outputs, the tiles' layout; each row's
    /// four unsigned activations broadcast). Each sum starts at the output's `-128 * sum p`,
    /// so it ends as `sum p * a`, exactly the tiles' integer; then the same test. `false`
    /// (nothing found is to be used) when `groups` or `acts` do not fit the screen.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn screen_vnni(
        screen: &Screen,
        groups: std::ops::Range<usize>,
        acts: &[Step],
        bounds: &[RowBound],
        found: &mut Vec<Candidates>,
    ) -> bool {
        let chunks = screen.chunks;
        let steps = chunks * CHUNK / 4;
        if !acts.len().is_multiple_of(steps.max(1))
            || acts.len() / steps.max(1) * VNNI_ROWS < bounds.len()
        {
            return false;
        }
        for g in groups.step_by(2) {
            let weights = |j: usize| -> &[[u8; 64]] {
                let w = screen.weights.get((g + j) * chunks..(g + j + 1) * chunks);
                w.unwrap_or_default().as_flattened().as_chunks::<64>().0
            };
            let (w0, w1) = (weights(0), weights(1));
            if w0.len() != steps || w1.len() != steps {
                return false;
            }
            let offset = |j: usize| -> __m512i {
                let at = (g + j) * 16;
                let o = screen.offset.get(at..at + 16).unwrap_or_default();
                cast(<[i32; 16]>::try_from(o).unwrap_or_default())
            };
            let start = [offset(0), offset(1)];
            let out = [Out::of(screen, g), Out::of(screen, g + 1)];
            // The next pair's weights (18 KB for SmolLM2, from memory: a pass reads about 94
            // MB of weights, more than the L3 share of a small machine keeps), asked for into
            // L2 a share at each group of rows, so that the next pair's first group does not
            // wait on them. On AMD Zen 5 the screen of a 128-row answer took 5.33-5.51 ms
            // without the requests and 4.49-4.67 ms with them (temporary timers, four
            // alternated pairs); in L1 instead, the same within the noise.
            let next = screen
                .weights
                .get((g + 2) * chunks..(g + 4) * chunks)
                .unwrap_or_default();
            let at = next.as_ptr().cast::<i8>();
            let groups = acts.len() / steps.max(1);
            let lines = std::mem::size_of_val(next).div_ceil(64);
            let per_group = lines.div_ceil(groups.max(1));
            for (rg, group) in acts.chunks_exact(steps).enumerate() {
                for line in (rg * per_group..((rg + 1) * per_group).min(lines)).map(|l| l * 64) {
                    _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(line));
                }
                let mut acc = [start; VNNI_ROWS];
                for ((a, b), x) in w0.iter().zip(w1).zip(group) {
                    let a: __m512i = cast(*a);
                    let b: __m512i = cast(*b);
                    each_row!(VNNI_ROWS, |r| {
                        let x = _mm512_set1_epi32(i32::from_le_bytes(x[r]));
                        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x, a);
                        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x, b);
                    });
                }
                for (r, acc) in acc.iter().enumerate() {
                    let row = rg * VNNI_ROWS + r;
                    let Some(b) = bounds.get(row) else { break };
                    for (j, &s) in acc.iter().enumerate() {
                        test(s, b, out[j], (row, g + j), found);
                    }
                }
            }
        }
        true
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {}

#[cfg(test)]
mod tests {
    use super::super::tests::numbers;
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// The first largest value's index, as a scan finds it.
    fn first_largest(row: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        best as u32
    }

    /// A Q8_0 matrix of `n` outputs by `k` inputs whose output `twin` repeats output `of`
    /// (equal values, so that the first-of-equals rule is tested), and `m` activation rows;
    /// `outliers`: whether the weights (`.0`) and the activations (`.1`) have a large value per
    /// row, as a model's hidden states do (each alone makes one of the bound's two terms the
    /// one that matters).
    fn case(
        n: usize,
        k: usize,
        m: usize,
        seed: u64,
        outliers: (bool, bool),
    ) -> (Q80Matrix, Vec<f32>) {
        let mut w = numbers(n * k, seed);
        // One large weight per output: its one scale then fits the rest coarsely, so that the
        // screened values are far off and the bounds are what keeps the answer exact.
        if outliers.0 {
            for (v, row) in w.chunks_exact_mut(k).enumerate() {
                row[(v * 7) % k] *= 40.0;
            }
        }
        let (of, twin) = (n / 5, n / 2);
        let copy = w[of * k..(of + 1) * k].to_vec();
        w[twin * k..(twin + 1) * k].copy_from_slice(&copy);
        let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let mut x = numbers(m * k, seed + 1);
        if outliers.1 {
            for row in x.chunks_exact_mut(k) {
                row[7] *= 30.0;
            }
        }
        // One row that is the twin's weights: its argmax is the first twin or near it.
        if m > 2 {
            let deq = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            x[2 * k..3 * k].copy_from_slice(&deq[of]);
        }
        (Q80Matrix::from_qtensor(&q).unwrap().unwrap(), x)
    }

    #[test]
    fn the_screened_argmax_is_the_full_products() {
        let mut kernels = vec![Kernel::Scalar];
        for kernel in [Kernel::Avx512Vnni, Kernel::Amx] {
            if Kernel::best() >= kernel {
                kernels.push(kernel);
            } else {
                eprintln!("no {} here: its screen is not tested", kernel.name());
            }
        }
        for (n, k, m, seed, outliers) in [
            (1000, 576, 37, 1, (true, false)),
            (1000, 576, 37, 2, (false, true)),
            (200, 96, 70, 3, (true, true)),
            (16, 64, 3, 4, (false, false)),
        ] {
            let (matrix, x) = case(n, k, m, seed, outliers);
            let screen = Screen::new(&matrix).unwrap();
            let full = matrix.matmul_with(Kernel::Scalar, &x);
            let (of, twin) = (n / 5, n / 2);
            // Targets: each row's argmax, the outputs ranked 2nd, 3rd, 5th and 9th, a fixed output,
            // and the twins.
            let mut sets: Vec<Vec<u32>> = Vec::new();
            sets.push(full.chunks(n).map(first_largest).collect());
            for rank in [1, 2, 4, 8] {
                sets.push(
                    full.chunks(n)
                        .map(|row| {
                            let mut order: Vec<u32> = (0..n as u32).collect();
                            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
                            order[rank.min(n - 1)]
                        })
                        .collect(),
                );
            }
            sets.push(vec![(n / 3) as u32; m]);
            sets.push(vec![twin as u32; m]);
            sets.push(vec![of as u32; m]);
            for kernel in &kernels {
                let mut screened = 0;
                for targets in &sets {
                    let got = screen.argmax(&matrix, *kernel, &x, targets).unwrap();
                    assert_eq!(got.len(), m);
                    for (r, (g, &t)) in got.iter().zip(targets).enumerate() {
                        let row = &full[r * n..(r + 1) * n];
                        let Some(g) = g else { continue };
                        screened += 1;
                        let best = first_largest(row);
                        let what = format!("{kernel:?} n{n} row {r} target {t}");
                        assert_eq!(g.id, best, "{what}");
                        assert_eq!(g.logit.to_bits(), row[best as usize].to_bits(), "{what}");
                        assert_eq!(g.target.to_bits(), row[t as usize].to_bits(), "{what}");
                    }
                }
                // Random weights leave the outputs close together; most rows are still
                // screened, not handed back.
                assert!(
                    screened * 2 > sets.len() * m,
                    "{kernel:?}: {screened} screened"
                );
            }
            // The twins tie on row 2 (the twin's own weights): the first of them is the argmax.
            let row = &full[2 * n..3 * n];
            assert_eq!(row[of], row[twin]);
        }
    }

    #[test]
    fn bad_input_is_declined_not_misread() {
        let (matrix, x) = case(40, 64, 4, 5, (true, true));
        let screen = Screen::new(&matrix).unwrap();
        // A target outside the matrix, and rows of the wrong width.
        assert!(
            screen
                .argmax(&matrix, Kernel::Scalar, &x, &[0, 1, 2, 40])
                .is_none()
        );
        assert!(
            screen
                .argmax(&matrix, Kernel::Scalar, &x[1..], &[0, 1, 2, 3])
                .is_none()
        );
        assert_eq!(
            screen.argmax(&matrix, Kernel::Scalar, &[], &[]),
            Some(Vec::new())
        );
        // A row whose quantized activations are not finite (a block's scale overflows f16)
        // is handed back; the others are answered.
        let mut bad = x.clone();
        bad[64 + 3] = f32::MAX;
        let got = screen
            .argmax(&matrix, Kernel::Scalar, &bad, &[0, 1, 2, 3])
            .unwrap();
        assert!(got[1].is_none());
        assert!(got[0].is_some() && got[2].is_some() && got[3].is_some());
    }
}
