//! Shape and indexing operations with HIP-19's signatures and PyTorch's
//! semantics where upstream differs (`chunk` sizes, `scatter`/`gather` with
//! index tensors smaller than their operands, dtype promotion in `cat`).

use crate::check;
use crate::dtype::result_type;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::Tensor;

/// The same elements viewed with `shape` (whose element count must match).
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let count: usize = shape.iter().product();
    if count != x.elem_count() {
        return Err(Error::ShapeMismatch {
            op: "reshape",
            expected: format!("a shape of {count} elements as requested by {shape:?}"),
            got: x.shape().clone(),
        });
    }
    x.reshape(shape).in_op("reshape")
}

/// Removes dimension `dim` if it has size 1; otherwise returns `x` unchanged
/// (as `torch.squeeze(x, dim)` does).
pub fn squeeze(x: &Tensor, dim: usize) -> Result<Tensor> {
    check::dim("squeeze", x, dim)?;
    x.squeeze(dim).in_op("squeeze")
}

/// Inserts a dimension of size 1 at `dim` (`0..=rank`).
pub fn unsqueeze(x: &Tensor, dim: usize) -> Result<Tensor> {
    if dim > x.rank() {
        return Err(Error::DimOutOfRange {
            op: "unsqueeze",
            dim,
            shape: x.shape().clone(),
        });
    }
    x.unsqueeze(dim).in_op("unsqueeze")
}

/// The `len` elements of dimension `dim` starting at `start` (a view).
pub fn narrow(x: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
    check::dim("narrow", x, dim)?;
    let size = x.dims()[dim];
    if start.checked_add(len).is_none_or(|end| end > size) {
        return Err(Error::InvalidArgument {
            op: "narrow",
            message: format!("range {start}..{start}+{len} exceeds dimension {dim} of size {size}"),
        });
    }
    x.narrow(dim, start, len).in_op("narrow")
}

/// Splits `x` along `dim` into at most `chunks` views of `ceil(size /
/// chunks)` elements each, the last one possibly smaller (`torch.chunk`).
pub fn chunk(x: &Tensor, chunks: usize, dim: usize) -> Result<Vec<Tensor>> {
    const OP: &str = "chunk";
    check::dim(OP, x, dim)?;
    if chunks == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            message: "chunks must be at least 1".into(),
        });
    }
    let size = x.dims()[dim];
    if size == 0 {
        return Ok(vec![x.clone()]);
    }
    let step = size.div_ceil(chunks);
    (0..size)
        .step_by(step)
        .map(|start| x.narrow(dim, start, step.min(size - start)).in_op(OP))
        .collect()
}

/// Promotes all tensors to their common dtype after checking devices.
fn common_dtype(op: &'static str, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = tensors.first() else {
        return Err(Error::InvalidArgument {
            op,
            message: "expected at least one tensor".into(),
        });
    };
    let mut dtype = first.dtype();
    for t in tensors {
        check::hip_dtype(op, t)?;
        check::same_device(op, first, t)?;
        dtype = result_type(dtype, t.dtype())?;
    }
    tensors
        .iter()
        .map(|t| t.to_dtype(dtype).in_op(op))
        .collect()
}

fn same_shape_except(op: &'static str, tensors: &[Tensor], dim: Option<usize>) -> Result<()> {
    let first = &tensors[0];
    for t in tensors {
        let mismatch = t.rank() != first.rank()
            || t.dims()
                .iter()
                .zip(first.dims())
                .enumerate()
                .any(|(i, (a, b))| Some(i) != dim && a != b);
        if mismatch {
            return Err(Error::ShapeMismatch {
                op,
                expected: match dim {
                    Some(d) => format!(
                        "the shape of the first tensor {:?} except in dimension {d}",
                        first.shape()
                    ),
                    None => format!("the shape of the first tensor {:?}", first.shape()),
                },
                got: t.shape().clone(),
            });
        }
    }
    Ok(())
}

/// Concatenates along existing dimension `dim`; dtypes are promoted to their
/// common type.
pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    const OP: &str = "cat";
    let tensors = common_dtype(OP, tensors)?;
    check::dim(OP, &tensors[0], dim)?;
    same_shape_except(OP, &tensors, Some(dim))?;
    Tensor::cat(&tensors, dim).in_op(OP)
}

/// Stacks equally shaped tensors along a new dimension `dim` (`0..=rank`);
/// dtypes are promoted to their common type.
pub fn stack(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    const OP: &str = "stack";
    let tensors = common_dtype(OP, tensors)?;
    if dim > tensors[0].rank() {
        return Err(Error::DimOutOfRange {
            op: OP,
            dim,
            shape: tensors[0].shape().clone(),
        });
    }
    same_shape_except(OP, &tensors, None)?;
    Tensor::stack(&tensors, dim).in_op(OP)
}

/// Checks `index` against an operand as `torch.gather`/`torch.scatter` do:
/// same rank, and no larger than `operand` outside `dim`.
fn check_index_shape(op: &'static str, operand: &Tensor, index: &Tensor, dim: usize) -> Result<()> {
    let fits = index.rank() == operand.rank()
        && index
            .dims()
            .iter()
            .zip(operand.dims())
            .enumerate()
            .all(|(i, (n, m))| i == dim || n <= m);
    if fits {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            expected: format!(
                "index of rank {} no larger than {:?} outside dimension {dim}",
                operand.rank(),
                operand.shape()
            ),
            got: index.shape().clone(),
        })
    }
}

/// The leading `index.dims()` block of `x` outside dimension `dim`.
fn narrow_to_index(x: &Tensor, index: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let mut out = x.clone();
    for (d, &n) in index.dims().iter().enumerate() {
        if d != dim && out.dims()[d] != n {
            out = out.narrow(d, 0, n)?;
        }
    }
    Ok(out)
}

/// `out[i][j] = x[index[i][j]][j]` for `dim = 0` (and likewise for other
/// dims): the output has the shape of `index`.
///
/// x: [..]; index: integer, same rank as x, no larger than x outside `dim`.
pub fn gather(x: &Tensor, index: &Tensor, dim: usize) -> Result<Tensor> {
    const OP: &str = "gather";
    check::hip_dtype(OP, x)?;
    check::dim(OP, x, dim)?;
    check::same_device(OP, x, index)?;
    check_index_shape(OP, x, index, dim)?;
    check::indices_in_range(OP, index, x.dims()[dim])?;
    narrow_to_index(x, index, dim)
        .and_then(|x| x.contiguous()?.gather(&index.contiguous()?, dim))
        .in_op(OP)
}

/// A copy of `x` with `out[index[i][j]][j] = src[i][j]` for `dim = 0` (and
/// likewise for other dims), for every position of `index`.
///
/// x: [..]; index: integer, same rank, no larger than `src` anywhere and no
/// larger than `x` outside `dim`; src: same dtype as x. When `index` holds a
/// target twice, one of the written values wins (unspecified which, as in
/// PyTorch).
pub fn scatter(x: &Tensor, index: &Tensor, src: &Tensor, dim: usize) -> Result<Tensor> {
    const OP: &str = "scatter";
    check::hip_dtype(OP, x)?;
    check::dim(OP, x, dim)?;
    check::same_device(OP, x, index)?;
    check::same_device(OP, x, src)?;
    check::same_dtype(OP, x, src)?;
    check_index_shape(OP, x, index, dim)?;
    let index_fits_src =
        index.rank() == src.rank() && index.dims().iter().zip(src.dims()).all(|(n, m)| n <= m);
    if !index_fits_src {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("index no larger than src {:?}", src.shape()),
            got: index.shape().clone(),
        });
    }
    check::indices_in_range(OP, index, x.dims()[dim])?;
    (|| {
        let mut src_block = src.clone();
        for (d, &n) in index.dims().iter().enumerate() {
            src_block = src_block.narrow(d, 0, n)?;
        }
        // Upstream scatters into operands whose shape equals the index's
        // outside `dim`: scatter into that block, then put it back.
        let mut ranges: Vec<std::ops::Range<usize>> = x.dims().iter().map(|&n| 0..n).collect();
        for (d, &n) in index.dims().iter().enumerate() {
            if d != dim {
                ranges[d] = 0..n;
            }
        }
        let block = narrow_to_index(x, index, dim)?.contiguous()?;
        let block = block.scatter(&index.contiguous()?, &src_block.contiguous()?, dim)?;
        if block.dims() == x.dims() {
            Ok(block)
        } else {
            x.slice_assign(&ranges, &block)
        }
    })()
    .in_op(OP)
}

/// The slices of `x` at `indices` along `dim`.
///
/// x: [..]; indices: 1-D integer; the output has `indices.len()` elements in
/// dimension `dim`.
pub fn index_select(x: &Tensor, indices: &Tensor, dim: usize) -> Result<Tensor> {
    const OP: &str = "index_select";
    check::hip_dtype(OP, x)?;
    check::dim(OP, x, dim)?;
    check::rank(OP, indices, 1)?;
    check::same_device(OP, x, indices)?;
    check::indices_in_range(OP, indices, x.dims()[dim])?;
    x.index_select(indices, dim).in_op(OP)
}
