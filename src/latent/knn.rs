//! Exact k-nearest neighbours of every row of a matrix, for t-SNE's affinities.
//!
//! Brute force through matrix products: for a block of query rows, every squared distance is
//! estimated as ‖q‖² + ‖x‖² − 2 q·x (one matrix product), the closest candidates are picked
//! from the estimates, and their distances are then computed exactly, as the square root of the
//! sum of squared differences in coordinate order. A bound on the estimate's rounding error
//! proves, row by row, that no point outside the candidates can be closer than the k-th; a row
//! where that proof fails gets exact distances to every point. The result is the exact
//! neighbour list (ties broken by the lower index), whatever the thread count.
//!
//! Written here rather than taken from a crate: a vantage-point tree (bhtsne's own search) or a
//! k-d tree does nearly a full scan per query on 64-dimensional codes, one distance at a time,
//! and approximate-neighbour crates (HNSW) trade exactness for speed on data far larger than a
//! test set.

use bhtsne::Neighbor;
use rayon::prelude::*;

use crate::kernels::matmul_rows;

/// Query rows per matrix product: the block of estimates (`BLOCK × n` floats) stays a few MB.
const BLOCK: usize = 64;
/// Candidates taken beyond `k` from the estimates, so that the proof rarely fails.
const MARGIN: usize = 32;

/// The exact distance between two rows: the square root of the sum of squared differences,
/// summed in coordinate order.
fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// The `k` nearest neighbours of each row of `x` (`[n, d]`, row-major), itself excluded, by
/// ascending Euclidean distance, ties by index.
///
/// # Panics
/// Unless `1 ≤ k < n`, `d ≥ 1` and `x` holds `n·d` values.
pub fn nearest_neighbors(x: &[f32], n: usize, d: usize, k: usize) -> Vec<Vec<Neighbor<f32>>> {
    assert!(
        k >= 1 && k < n && d >= 1 && x.len() == n * d,
        "{k} neighbours of {n} rows of {d} values ({} given)",
        x.len()
    );
    let norms: Vec<f32> = x
        .chunks_exact(d)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    // The rounding of ‖q‖² + ‖x‖² − 2 q·x in f32 stays within (d + 8)·ε·(‖q‖ + ‖x‖)² for any
    // order of summation; (‖q‖ + ‖x‖)² ≤ 2 (‖q‖² + ‖x‖²).
    let tol = 2.0 * (d as f32 + 8.0) * f32::EPSILON;
    let starts: Vec<usize> = (0..n).step_by(BLOCK).collect();
    starts
        .par_iter()
        .flat_map_iter(|&start| {
            let rows = BLOCK.min(n - start);
            let mut dots = vec![0f32; rows * n];
            matmul_rows(
                &mut dots,
                &x[start * d..(start + rows) * d],
                (rows, d),
                x,
                n,
                true,
            );
            let norms = &norms;
            (0..rows)
                .map(|r| {
                    let i = start + r;
                    let q = &x[i * d..(i + 1) * d];
                    let estimates = dots[r * n..(r + 1) * n]
                        .iter()
                        .zip(norms)
                        .map(|(dot, nx)| norms[i] + nx - 2.0 * dot);
                    row_neighbors(x, d, i, q, estimates, |j| tol * (norms[i] + norms[j]), k)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The neighbours of row `i` (`q`) from the estimated squared distances to every row, each
/// within `error(j)` of the true one.
fn row_neighbors(
    x: &[f32],
    d: usize,
    i: usize,
    q: &[f32],
    estimates: impl Iterator<Item = f32>,
    error: impl Fn(usize) -> f32,
    k: usize,
) -> Vec<Neighbor<f32>> {
    let exact = |j: usize| Neighbor {
        index: j,
        distance: distance(q, &x[j * d..(j + 1) * d]),
    };
    let by_distance = |a: &Neighbor<f32>, b: &Neighbor<f32>| {
        a.distance
            .total_cmp(&b.distance)
            .then(a.index.cmp(&b.index))
    };
    let mut est: Vec<(f32, usize)> = estimates
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(j, e)| (e, j))
        .collect();
    let take = (k + MARGIN).min(est.len());
    if take < est.len() {
        est.select_nth_unstable_by(take, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    let mut found: Vec<Neighbor<f32>> = est[..take].iter().map(|&(_, j)| exact(j)).collect();
    found.sort_unstable_by(by_distance);
    found.truncate(k);
    // Proof: every other point's true squared distance is at least its estimate less the error,
    // and its exact sum of squares at least that less the sum's own rounding (`shrink`); that
    // must exceed the k-th exact distance squared (itself within a few ε of its sum).
    let kth = found[k - 1].distance;
    let kth_sq = kth * kth * (1.0 + 4.0 * f32::EPSILON);
    let shrink = 1.0 - (d as f32 + 8.0) * f32::EPSILON;
    let proven = est[take..]
        .iter()
        .all(|&(e, j)| (e - error(j)) * shrink > kth_sq);
    if proven {
        return found;
    }
    let mut all: Vec<Neighbor<f32>> = (0..x.len() / d).filter(|&j| j != i).map(exact).collect();
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, by_distance);
        all.truncate(k);
    }
    all.sort_unstable_by(by_distance);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every point's neighbours by exact distance to every other, sorted.
    fn brute(x: &[f32], n: usize, d: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
        (0..n)
            .map(|i| {
                let mut v: Vec<(usize, f32)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| (j, distance(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d])))
                    .collect();
                v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                v.truncate(k);
                v
            })
            .collect()
    }

    fn plain(v: &[Vec<Neighbor<f32>>]) -> Vec<Vec<(usize, f32)>> {
        v.iter()
            .map(|r| r.iter().map(|n| (n.index, n.distance)).collect())
            .collect()
    }

    #[test]
    fn matches_brute_force_with_clusters_duplicates_and_ties() {
        let (n, d, k) = (300, 16, 20);
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let mut x = vec![0f32; n * d];
        for i in 0..n {
            // Far-off clusters (large norms against small distances test the proof), exact
            // duplicates and points on a grid (equal distances).
            let centre = 100.0 * (i % 5) as f32;
            for c in 0..d {
                x[i * d + c] = match i % 7 {
                    0 if i >= 7 => x[(i - 7) * d + c],
                    1 => centre + (i / 7 % 3) as f32,
                    _ => centre + next(),
                };
            }
        }
        assert_eq!(plain(&nearest_neighbors(&x, n, d, k)), brute(&x, n, d, k));
    }

    /// Estimates that prove nothing (all far too small) send the row to exact distances to
    /// every point; estimates off by no more than the bound still give the exact neighbours.
    #[test]
    fn rows_whose_proof_fails_get_every_distance() {
        let (n, d, k) = (150, 6, 10);
        let x: Vec<f32> = (0..n * d).map(|v| ((v * 53) % 97) as f32 / 9.0).collect();
        let want = brute(&x, n, d, k);
        for i in [0, 77, 149] {
            let q = &x[i * d..(i + 1) * d];
            let exact_sq = |j: usize| distance(q, &x[j * d..(j + 1) * d]).powi(2);
            // Misleading: two points in three estimated closest (picked as candidates at
            // random), the rest at 0, with no error allowed: the proof fails.
            let lies = (0..n).map(|j| if j % 3 == 0 { 0.0 } else { -1.0 });
            let got = row_neighbors(&x, d, i, q, lies, |_| 0.0, k);
            assert_eq!(plain(&[got])[0], want[i], "row {i}, misleading estimates");
            // Off by the whole allowed error, alternately up and down.
            let err = |j: usize| 1e-3 * (1.0 + exact_sq(j));
            let off = (0..n).map(|j| exact_sq(j) + if j % 2 == 0 { err(j) } else { -err(j) });
            let got = row_neighbors(&x, d, i, q, off, err, k);
            assert_eq!(
                plain(&[got])[0],
                want[i],
                "row {i}, estimates off by the bound"
            );
        }
    }

    #[test]
    fn same_on_one_thread_and_many() {
        let (n, d, k) = (200, 8, 30);
        let x: Vec<f32> = (0..n * d).map(|v| ((v * 37) % 101) as f32 / 7.0).collect();
        let one = crate::device::on_one_thread(|| plain(&nearest_neighbors(&x, n, d, k)));
        assert_eq!(one, plain(&nearest_neighbors(&x, n, d, k)));
        assert_eq!(one, brute(&x, n, d, k));
    }
}
