//! A sparse matrix in compressed rows, columns and values side by side (structure of arrays):
//! the epoch's weights, clipped weights, bonds and their EMA.

use crate::fixed::{Divisor, Fx, ZERO, add};

/// Rows of `(column, value)` entries with strictly increasing columns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sparse {
    /// Row `i` is `cols[off[i]..off[i + 1]]` with `vals` alongside.
    off: Vec<u32>,
    pub(crate) cols: Vec<u16>,
    pub(crate) vals: Vec<Fx>,
}

impl Sparse {
    /// An empty matrix with room for `rows` rows and `nnz` entries.
    pub(crate) fn with_capacity(rows: usize, nnz: usize) -> Self {
        let mut off = Vec::with_capacity(rows + 1);
        off.push(0);
        Sparse {
            off,
            cols: Vec::with_capacity(nnz),
            vals: Vec::with_capacity(nnz),
        }
    }

    /// Append an entry to the row being built.
    #[inline]
    pub(crate) fn push(&mut self, j: u16, v: Fx) {
        self.cols.push(j);
        self.vals.push(v);
    }

    /// Close the row being built; with `check`, sorts it by column if needed (input rows may be
    /// unordered). Rows built from sorted input, or in column order, need no check.
    pub(crate) fn end_row_checked(&mut self, check: bool) {
        let start = *self.off.last().unwrap_or(&0) as usize;
        let cols = &self.cols[start..];
        if check && !cols.windows(2).all(|w| w[0] < w[1]) {
            let mut pairs: Vec<(u16, Fx)> = cols
                .iter()
                .copied()
                .zip(self.vals[start..].iter().copied())
                .collect();
            pairs.sort_unstable_by_key(|&(j, _)| j);
            for (k, (j, v)) in pairs.into_iter().enumerate() {
                self.cols[start + k] = j;
                self.vals[start + k] = v;
            }
        }
        // nnz <= 65535 * 65535 < 2^32.
        self.off.push(self.cols.len() as u32);
    }

    /// Close a row whose entries were pushed in increasing column order.
    pub(crate) fn end_row(&mut self) {
        debug_assert!({
            let start = self.off.last().map_or(0, |&o| o as usize);
            self.cols[start..].windows(2).all(|w| w[0] < w[1])
        });
        self.end_row_checked(false);
    }

    /// Number of rows.
    pub(crate) fn rows(&self) -> usize {
        self.off.len() - 1
    }

    /// The range of row `i` in `cols` and `vals`.
    #[inline]
    pub(crate) fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.off[i] as usize..self.off[i + 1] as usize
    }

    /// Row `i`'s columns and values.
    #[inline]
    pub(crate) fn row(&self, i: usize) -> (&[u16], &[Fx]) {
        let r = self.range(i);
        (&self.cols[r.clone()], &self.vals[r])
    }

    /// Per-column sums (saturating, rows in order).
    pub(crate) fn col_sums(&self, columns: usize) -> Vec<Fx> {
        let mut sums = vec![ZERO; columns];
        for (&j, &v) in self.cols.iter().zip(&self.vals) {
            let s = &mut sums[usize::from(j)];
            *s = add(*s, v);
        }
        sums
    }

    /// Normalise each column to sum 1 where its sum is not 0.
    pub(crate) fn col_normalize(&mut self, columns: usize) {
        let divisors: Vec<Divisor> = self
            .col_sums(columns)
            .into_iter()
            .map(Divisor::or_identity)
            .collect();
        for (&j, v) in self.cols.iter().zip(self.vals.iter_mut()) {
            *v = divisors[usize::from(j)].divide(*v);
        }
    }

    /// Scale each column so that its largest entry is 1 (columns whose max is 0 stay).
    pub(crate) fn col_max_upscale(&mut self, columns: usize) {
        let mut maxes = vec![ZERO; columns];
        for (&j, &v) in self.cols.iter().zip(&self.vals) {
            let m = &mut maxes[usize::from(j)];
            if *m < v {
                *m = v;
            }
        }
        let divisors: Vec<Option<Divisor>> = maxes
            .into_iter()
            .map(|m| (m != ZERO).then(|| Divisor::new(m)))
            .collect();
        for (&j, v) in self.cols.iter().zip(self.vals.iter_mut()) {
            if let Some(d) = &divisors[usize::from(j)] {
                *v = d.divide(*v);
            }
        }
    }
}
