//! NumPy-convention type promotion over the seven HIP-19 dtypes.

use crate::{Error, Result};
use candle_core::DType;

/// The dtypes HIP-19 §Tensor Types requires, in the order of its table.
pub const HIP_DTYPES: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I64,
    DType::U32,
    DType::U8,
];

pub(crate) fn ensure_hip_dtype(op: &'static str, dtype: DType) -> Result<()> {
    if HIP_DTYPES.contains(&dtype) {
        Ok(())
    } else {
        Err(Error::UnsupportedDTypeForOp {
            op,
            dtype,
            reason: "HIP-19 defines f32, f16, bf16, f64, i64, u32 and u8 only",
        })
    }
}

/// The dtype of `a op b` for two arrays of dtypes `a` and `b`.
///
/// Follows NumPy's array-array rules (NEP 50), with `ml_dtypes`' bfloat16
/// where it defines one. Where neither defines a result, bf16 is treated like
/// f16 (integers wider than 8 bits need f64) and `bf16 + f16 -> f32` as
/// HIP-19 requires. The full table is checked against a NumPy-generated
/// fixture in the conformance suite.
///
/// ```
/// use candle_core::DType;
/// use candle_ops::result_type;
/// assert_eq!(result_type(DType::U8, DType::F32)?, DType::F32);
/// assert_eq!(result_type(DType::BF16, DType::F16)?, DType::F32);
/// assert_eq!(result_type(DType::U32, DType::F32)?, DType::F64);
/// # Ok::<(), candle_ops::Error>(())
/// ```
pub fn result_type(a: DType, b: DType) -> Result<DType> {
    ensure_hip_dtype("result_type", a)?;
    ensure_hip_dtype("result_type", b)?;
    if a == b {
        return Ok(a);
    }
    Ok(match (a.is_float(), b.is_float()) {
        (false, false) => {
            // u8 and u32 are the only unsigned types; i64 holds both.
            if a == DType::I64 || b == DType::I64 {
                DType::I64
            } else {
                DType::U32
            }
        }
        (true, true) => {
            let pair_is_f16_bf16 = matches!(
                (a, b),
                (DType::F16, DType::BF16) | (DType::BF16, DType::F16)
            );
            if pair_is_f16_bf16 {
                DType::F32
            } else if a.size_in_bytes() >= b.size_in_bytes() {
                a
            } else {
                b
            }
        }
        (true, false) => float_with_int(a, b),
        (false, true) => float_with_int(b, a),
    })
}

/// A 16-bit float holds every u8 exactly; wider integers need f64 (NumPy
/// promotes them to f64 even against f32).
fn float_with_int(float: DType, int: DType) -> DType {
    if int == DType::U8 {
        float
    } else {
        DType::F64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hip19_examples_hold() {
        assert_eq!(result_type(DType::U8, DType::F32).unwrap(), DType::F32);
        assert_eq!(result_type(DType::F16, DType::F32).unwrap(), DType::F32);
        assert_eq!(result_type(DType::BF16, DType::F16).unwrap(), DType::F32);
    }

    #[test]
    fn promotion_is_symmetric() {
        for a in HIP_DTYPES {
            for b in HIP_DTYPES {
                assert_eq!(
                    result_type(a, b).unwrap(),
                    result_type(b, a).unwrap(),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn non_hip_dtype_is_rejected_by_name() {
        let err = result_type(DType::I16, DType::F32).unwrap_err();
        assert!(err.to_string().contains("I16"), "{err}");
    }
}
