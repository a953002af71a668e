//! Wrong shapes, dtypes, devices and arguments give the typed error that
//! names the operation — never a panic.

use candle_core::{DType, Device, Tensor};
use candle_ops::Error;

fn t(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &Device::Cpu).unwrap()
}

#[test]
fn incompatible_broadcast_names_the_op_and_both_shapes() {
    let err = candle_ops::add(&t(&[2, 3], DType::F32), &t(&[4], DType::F32)).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "add", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
}

#[test]
fn matmul_inner_dimension_mismatch_is_a_shape_error() {
    let err = candle_ops::matmul(&t(&[2, 3], DType::F32), &t(&[4, 5], DType::F32)).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul", .. }),
        "{err:?}"
    );
}

#[test]
fn float_only_ops_reject_integers_with_the_dtype() {
    let x = t(&[2, 3], DType::I64);
    for (name, result) in [
        ("softmax", candle_ops::softmax(&x, 1)),
        ("gelu", candle_ops::gelu(&x)),
        ("mean", candle_ops::mean(&x, &[0])),
    ] {
        match result {
            Err(Error::UnsupportedDTypeForOp { op, dtype, .. }) => {
                assert_eq!((op, dtype), (name, DType::I64));
            }
            other => panic!("{name}: expected UnsupportedDTypeForOp, got {other:?}"),
        }
    }
}

#[test]
fn non_hip_dtype_is_rejected() {
    let err = candle_ops::add(&t(&[2], DType::I16), &t(&[2], DType::I16)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDTypeForOp {
                dtype: DType::I16,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn attention_rejects_bad_grouping_and_mask_shapes() {
    let q = t(&[1, 3, 4, 8], DType::F32);
    let kv = t(&[1, 2, 5, 8], DType::F32);
    let err = candle_ops::scaled_dot_product_attention(&q, &kv, &kv, None, 1.0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "scaled_dot_product_attention",
                ..
            }
        ),
        "{err:?}"
    );

    let q = t(&[1, 4, 4, 8], DType::F32);
    let mask = t(&[3, 5], DType::U8);
    let err = candle_ops::scaled_dot_product_attention(&q, &kv, &kv, Some(&mask), 1.0).unwrap_err();
    assert!(err.to_string().contains("[1, 4, 4, 5]"), "{err}");

    let err =
        candle_ops::scaled_dot_product_attention(&q, &kv, &t(&[1, 2, 5, 8], DType::F16), None, 1.0)
            .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DTypeMismatch {
                expected: DType::F32,
                got: DType::F16,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rope_rejects_tables_of_the_wrong_length() {
    let x = t(&[1, 2, 4, 8], DType::F32);
    let err = candle_ops::apply_rotary_emb(&x, &t(&[3, 8], DType::F32), &t(&[3, 8], DType::F32))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "apply_rotary_emb",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn out_of_range_indices_are_errors_not_panics() {
    let weight = t(&[10, 4], DType::F32);
    let ids = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
    let err = candle_ops::embedding(&ids, &weight).unwrap_err();
    assert!(err.to_string().contains("index 10"), "{err}");

    let negative = Tensor::new(&[-1i64], &Device::Cpu).unwrap();
    assert!(candle_ops::index_select(&weight, &negative, 0).is_err());

    let index = Tensor::new(&[[7i64]], &Device::Cpu).unwrap();
    assert!(candle_ops::gather(&t(&[2, 3], DType::F32), &index, 1).is_err());
    assert!(
        candle_ops::scatter(&t(&[2, 3], DType::F32), &index, &t(&[1, 1], DType::F32), 1).is_err()
    );
}

#[test]
fn dims_and_ranges_out_of_bounds_are_errors() {
    let x = t(&[2, 3], DType::F32);
    assert!(matches!(
        candle_ops::transpose(&x, 0, 2),
        Err(Error::DimOutOfRange {
            op: "transpose",
            dim: 2,
            ..
        })
    ));
    assert!(matches!(
        candle_ops::sum(&x, &[0, 0]),
        Err(Error::InvalidArgument { op: "sum", .. })
    ));
    assert!(matches!(
        candle_ops::narrow(&x, 1, 2, 2),
        Err(Error::InvalidArgument { op: "narrow", .. })
    ));
    assert!(matches!(
        candle_ops::chunk(&x, 0, 0),
        Err(Error::InvalidArgument { op: "chunk", .. })
    ));
    assert!(matches!(
        candle_ops::reshape(&x, &[4, 2]),
        Err(Error::ShapeMismatch { op: "reshape", .. })
    ));
    assert!(matches!(
        candle_ops::unsqueeze(&x, 3),
        Err(Error::DimOutOfRange {
            op: "unsqueeze",
            ..
        })
    ));
}

#[test]
fn conv_and_pool_reject_impossible_geometry() {
    let x = t(&[1, 3, 4, 4], DType::F32);
    let k = t(&[2, 3, 7, 7], DType::F32);
    assert!(matches!(
        candle_ops::conv2d(&x, &k, None, 1, 1),
        Err(Error::InvalidArgument { op: "conv2d", .. })
    ));
    let wrong_channels = t(&[2, 2, 3, 3], DType::F32);
    assert!(matches!(
        candle_ops::conv2d(&x, &wrong_channels, None, 0, 1),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        candle_ops::conv2d(&x, &t(&[2, 3, 3, 3], DType::F32), None, 0, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        candle_ops::max_pool2d(&x, 5, 1),
        Err(Error::InvalidArgument {
            op: "max_pool2d",
            ..
        })
    ));
    assert!(matches!(
        candle_ops::avg_pool2d(&x, 2, 0),
        Err(Error::InvalidArgument {
            op: "avg_pool2d",
            ..
        })
    ));
}

#[test]
fn norms_check_weight_shape_and_dtype() {
    let x = t(&[2, 8], DType::F32);
    assert!(matches!(
        candle_ops::rms_norm(&x, &t(&[4], DType::F32), 1e-6),
        Err(Error::ShapeMismatch { op: "rms_norm", .. })
    ));
    assert!(matches!(
        candle_ops::layer_norm(&x, &t(&[8], DType::F64), None, 1e-5),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        candle_ops::rms_norm_residual(&x, &t(&[2, 4], DType::F32), &t(&[8], DType::F32), 1e-6),
        Err(Error::ShapeMismatch {
            op: "rms_norm_residual",
            ..
        })
    ));
}

#[test]
fn missing_backends_are_reported_as_not_available() {
    // This build has no CUDA (the feature is off on machines without the
    // toolkit); asking for the device must say so, not crash.
    if cfg!(feature = "cuda") {
        return;
    }
    let err = Device::new_cuda(0)
        .map_err(|e| Error::from_candle("to_device", e))
        .unwrap_err();
    assert!(matches!(err, Error::NotAvailable { .. }), "{err:?}");
    assert!(err.to_string().contains("cuda"), "{err}");
}

#[test]
fn upstream_device_mismatch_becomes_the_typed_device_error() {
    // This machine has a single device, so the mismatch is produced the way
    // a CUDA build would see it: as upstream's error, converted.
    let upstream = candle_core::Error::DeviceMismatchBinaryOp {
        lhs: candle_core::DeviceLocation::Cpu,
        rhs: candle_core::DeviceLocation::Cuda { gpu_id: 0 },
        op: "add",
    };
    let err = Error::from_candle("add", upstream);
    assert!(
        matches!(err, Error::DeviceMismatch { op: "add", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("to_device"), "{err}");
}

#[test]
fn integer_overflow_wraps_like_numpy_instead_of_panicking() {
    let a = Tensor::new(&[250u8, 3], &Device::Cpu).unwrap();
    let b = Tensor::new(&[10u8, 5], &Device::Cpu).unwrap();
    assert_eq!(
        candle_ops::add(&a, &b).unwrap().to_vec1::<u8>().unwrap(),
        [4, 8]
    );
    assert_eq!(
        candle_ops::sub(&b, &a).unwrap().to_vec1::<u8>().unwrap(),
        [16, 2]
    );
    assert_eq!(
        candle_ops::neg(&b).unwrap().to_vec1::<u8>().unwrap(),
        [246, 251]
    );
    let zero = Tensor::new(&[0u32, 0], &Device::Cpu).unwrap();
    let quotient = candle_ops::div(&Tensor::new(&[1u32, 0], &Device::Cpu).unwrap(), &zero).unwrap();
    let q = quotient.to_vec1::<f32>().unwrap();
    assert!(q[0].is_infinite() && q[1].is_nan(), "{q:?}");
}
