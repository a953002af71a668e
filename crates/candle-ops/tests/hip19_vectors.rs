//! The seed test vectors of HIP-19 §Test Vectors that belong to the tensor
//! operations (the Hamiltonian and quantized ones live in their crates).

use candle_core::{DType, Device, Tensor};

#[test]
fn test_matmul_basic() {
    let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[5f32, 6.], [7., 8.]], &Device::Cpu).unwrap();
    let c = candle_ops::matmul(&a, &b).unwrap();
    assert_eq!(c.to_vec2::<f32>().unwrap(), &[[19., 22.], [43., 50.]]);
}

#[test]
fn test_softmax() {
    let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
    let y = candle_ops::softmax(&x, 0).unwrap();
    let vals = y.to_vec1::<f32>().unwrap();
    assert!((vals[0] - 0.0900).abs() < 1e-3);
    assert!((vals[1] - 0.2447).abs() < 1e-3);
    assert!((vals[2] - 0.6652).abs() < 1e-3);
}

#[test]
fn test_rope_embedding() {
    let x = Tensor::ones((1, 1, 4, 64), DType::F32, &Device::Cpu).unwrap();
    let cos = Tensor::ones((4, 64), DType::F32, &Device::Cpu).unwrap();
    let sin = Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap();
    let y = candle_ops::apply_rotary_emb(&x, &cos, &sin).unwrap();
    let diff = (&x - &y).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn test_rope_embedding_is_position_dependent() {
    // The vector above only checks the identity rotation; with real angles
    // the same input must come out differently at different positions while
    // each (x_i, x_{i+d/2}) pair keeps its norm.
    let (seq, dim) = (4usize, 8usize);
    let x = Tensor::ones((1, 1, seq, dim), DType::F32, &Device::Cpu).unwrap();
    let angles: Vec<f32> = (0..seq)
        .flat_map(|p| {
            (0..dim).map(move |i| {
                p as f32 * 10000f32.powf(-((i % (dim / 2)) as f32 * 2.0) / dim as f32)
            })
        })
        .collect();
    let angles = Tensor::from_vec(angles, (seq, dim), &Device::Cpu).unwrap();
    let y =
        candle_ops::apply_rotary_emb(&x, &angles.cos().unwrap(), &angles.sin().unwrap()).unwrap();
    let rows = y
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_ne!(rows[0], rows[1]);
    for row in &rows {
        for i in 0..dim / 2 {
            let norm = row[i].hypot(row[i + dim / 2]);
            assert!(
                (norm - 2f32.sqrt()).abs() < 1e-6,
                "rotation changed a pair's norm: {norm}"
            );
        }
    }
}

#[test]
fn test_device_transfer() {
    let x = Tensor::randn(0f32, 1.0, (2, 3), &Device::Cpu).unwrap();
    let x2 = x.to_device(&Device::Cpu).unwrap();
    let diff = (x - x2).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
}
