//! Operand checks shared by every backend: an op handed operands it cannot combine returns
//! [`Error::Op`] naming the backend, the op and what is wrong. Shapes are `(rows, cols)`.

use super::{AttentionMask, AttentionParams};
use crate::error::{Error, Result};

/// `Err(Error::Op)` for `op` of `backend` unless `ok`; the message is built only on failure.
pub fn check(
    backend: &'static str,
    ok: bool,
    op: &'static str,
    message: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Op {
            backend,
            op,
            message: message(),
        })
    }
}

/// `x [rows, K]` and `W [N, K]` can be multiplied (`x·Wᵀ`) and a bias has one value per output.
pub fn matmul(
    backend: &'static str,
    op: &'static str,
    (x_rows, x_cols): (usize, usize),
    (w_rows, w_cols): (usize, usize),
    bias_len: Option<usize>,
) -> Result<()> {
    check(backend, x_cols == w_cols, op, || {
        format!(
            "x is [{x_rows}, {x_cols}] but the weight is [{w_rows}, {w_cols}]: inner dimensions differ"
        )
    })?;
    if let Some(n) = bias_len {
        check(backend, n == w_rows, op, || {
            format!("the bias has {n} values for {w_rows} outputs")
        })?;
    }
    Ok(())
}

/// Every row index lies below `len`.
pub fn rows(backend: &'static str, op: &'static str, rows: &[usize], len: usize) -> Result<()> {
    match rows.iter().find(|&&r| r >= len) {
        Some(r) => check(backend, false, op, || {
            format!("row {r} of a tensor of {len} rows")
        }),
        None => Ok(()),
    }
}

/// One position per row, an even head dim dividing the columns, half as many frequencies.
pub fn rope(
    backend: &'static str,
    (x_rows, x_cols): (usize, usize),
    head_dim: usize,
    positions: usize,
    frequencies: usize,
) -> Result<()> {
    check(backend, positions == x_rows, "rope", || {
        format!("{positions} positions for {x_rows} rows")
    })?;
    check(
        backend,
        head_dim > 0
            && head_dim.is_multiple_of(2)
            && x_cols.is_multiple_of(head_dim)
            && frequencies == head_dim / 2,
        "rope",
        || {
            format!(
                "rows of {x_cols} columns, head dim {head_dim}, {frequencies} frequencies (an even \
                 head dim dividing the columns and half as many frequencies are needed)"
            )
        },
    )
}

/// q, k and v have the widths the heads give, k and v the same length, the heads group evenly over
/// the key/value heads, and the mask fits the rows.
pub fn attention(
    backend: &'static str,
    op: &'static str,
    (q_rows, q_cols): (usize, usize),
    (k_rows, k_cols): (usize, usize),
    (v_rows, v_cols): (usize, usize),
    p: &AttentionParams,
) -> Result<()> {
    let (qc, kvc) = (p.heads * p.head_dim, p.kv_heads * p.head_dim);
    check(
        backend,
        p.kv_heads > 0
            && p.heads.is_multiple_of(p.kv_heads)
            && q_cols == qc
            && k_cols == kvc
            && v_cols == kvc
            && k_rows == v_rows,
        op,
        || {
            format!(
                "{} heads over {} key/value heads of width {}: q [{q_rows}, {q_cols}], k [{k_rows}, \
                 {k_cols}], v [{v_rows}, {v_cols}]",
                p.heads, p.kv_heads, p.head_dim
            )
        },
    )?;
    match p.mask {
        AttentionMask::Bidirectional { seq_len, key_valid } => check(
            backend,
            seq_len > 0
                && q_rows == k_rows
                && q_rows.is_multiple_of(seq_len)
                && key_valid.is_none_or(|m| m.len() == k_rows),
            op,
            || {
                format!(
                    "bidirectional attention over sequences of {seq_len} rows: {q_rows} queries, \
                     {k_rows} keys, {} key flags",
                    key_valid.map_or(0, <[bool]>::len)
                )
            },
        ),
        AttentionMask::Causal { offset } => check(backend, offset + q_rows == k_rows, op, || {
            format!(
                "causal attention: {offset} earlier keys and {q_rows} queries need {} keys, not \
                 {k_rows}",
                offset + q_rows
            )
        }),
    }
}
