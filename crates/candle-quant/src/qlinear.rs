//! `QLinear`: quantized matmul on every device.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Storage, Tensor};

use crate::kernels::matmul::{matmul_group, GroupMember, WeightBlocks};
use crate::kernels::{self, Isa};
use crate::quant::{self, QuantError, QuantType};

/// Weight bytes that may live inside a larger buffer (typically a memory-mapped GGUF
/// file) kept alive by an `Arc`, so layers borrow the mapping instead of copying it.
///
/// ```
/// use std::sync::Arc;
/// use candle_quant::WeightBytes;
/// let file: Arc<Vec<u8>> = Arc::new(vec![0u8; 64]);
/// let slice = WeightBytes::new(file, 16..48).unwrap();
/// assert_eq!(slice.as_slice().len(), 32);
/// ```
#[derive(Clone)]
pub struct WeightBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl WeightBytes {
    /// The bytes `owner[range]`; fails if `range` is not inside `owner`.
    pub fn new<O: AsRef<[u8]> + Send + Sync + 'static>(
        owner: Arc<O>,
        range: Range<usize>,
    ) -> Result<WeightBytes, QuantError> {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = owner;
        let len = owner.as_ref().as_ref().len();
        if range.start > range.end || range.end > len {
            return Err(QuantError::ByteRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(WeightBytes { owner, range })
    }

    /// The borrowed bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.owner.as_ref().as_ref()[self.range.clone()]
    }

    /// The same bytes in an allocation aligned to 8 bytes (a copy), for slices whose
    /// start is not aligned for the block type.
    fn to_aligned(&self) -> WeightBytes {
        let bytes = self.as_slice();
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let len = bytes.len();
        WeightBytes {
            owner: Arc::new(AlignedBytes { words, len }),
            range: 0..len,
        }
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        WeightBytes {
            owner: Arc::new(bytes),
            range: 0..len,
        }
    }
}

impl From<&[u8]> for WeightBytes {
    fn from(bytes: &[u8]) -> Self {
        WeightBytes::from(bytes.to_vec())
    }
}

impl From<Arc<[u8]>> for WeightBytes {
    fn from(bytes: Arc<[u8]>) -> Self {
        let len = bytes.len();
        WeightBytes {
            owner: Arc::new(bytes),
            range: 0..len,
        }
    }
}

struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

#[derive(Clone)]
enum Weights {
    /// Block-quantized, F16 or BF16 bytes multiplied by this crate's kernels (CPU), as
    /// stored: a memory-mapped file's weights stay in the mapping.
    Native(WeightBytes),
    /// F32 weights as an [out_features, in_features] tensor (CPU).
    Dense(Tensor),
    /// Any type on CUDA/Metal, through upstream candle.
    Upstream(QMatMul),
}

/// A linear layer `y = x · Wᵀ` whose weight is stored in one of the [`QuantType`]s.
///
/// On CPU, quantized, F16 and BF16 weights are multiplied by this crate's kernels
/// straight from their bytes (no copy when the bytes are aligned; F16/BF16 against the
/// f32 input as it is); F32 weights go through candle's matmul. On CUDA/Metal
/// everything goes through upstream `QMatMul`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use candle_quant::{quant, QLinear, QuantType};
/// let (out_f, in_f) = (4, 64);
/// let w: Vec<f32> = (0..out_f * in_f).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5).collect();
/// let bytes = quant::quantize(QuantType::Q8_0, &w).unwrap();
/// let layer = QLinear::from_bytes(QuantType::Q8_0, out_f, in_f, bytes).unwrap();
/// let x = Tensor::ones((2, in_f), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let y = layer.forward(&x).unwrap();
/// assert_eq!(y.dims(), &[2, out_f]);
/// ```
#[derive(Clone)]
pub struct QLinear {
    ty: QuantType,
    out_features: usize,
    in_features: usize,
    isa: Isa,
    weights: Weights,
}

impl QLinear {
    /// A CPU layer over `bytes` holding `out_features` rows of `in_features` values of
    /// type `ty` (ggml row-major order, as in GGUF).
    pub fn from_bytes(
        ty: QuantType,
        out_features: usize,
        in_features: usize,
        bytes: impl Into<WeightBytes>,
    ) -> Result<QLinear, QuantError> {
        QLinear::from_bytes_on(ty, out_features, in_features, bytes, &Device::Cpu)
    }

    /// Like [`QLinear::from_bytes`], on `device` (CUDA/Metal use upstream `QMatMul`).
    pub fn from_bytes_on(
        ty: QuantType,
        out_features: usize,
        in_features: usize,
        bytes: impl Into<WeightBytes>,
        device: &Device,
    ) -> Result<QLinear, QuantError> {
        let upstream = !device.is_cpu();
        QLinear::build(
            ty,
            out_features,
            in_features,
            bytes.into(),
            device,
            upstream,
        )
    }

    /// A layer that always multiplies through upstream candle's `QMatMul`, also on the
    /// CPU: the baseline for side-by-side benchmarks in one binary.
    pub fn upstream_from_bytes(
        ty: QuantType,
        out_features: usize,
        in_features: usize,
        bytes: impl Into<WeightBytes>,
        device: &Device,
    ) -> Result<QLinear, QuantError> {
        QLinear::build(ty, out_features, in_features, bytes.into(), device, true)
    }

    fn build(
        ty: QuantType,
        out_features: usize,
        in_features: usize,
        bytes: WeightBytes,
        device: &Device,
        upstream: bool,
    ) -> Result<QLinear, QuantError> {
        const OP: &str = "QLinear::from_bytes";
        if out_features == 0 {
            return Err(QuantError::ZeroDimension {
                op: OP,
                what: "out_features",
            });
        }
        if in_features == 0 {
            return Err(QuantError::ZeroDimension {
                op: OP,
                what: "in_features",
            });
        }
        let row_bytes = ty.row_bytes(in_features)?;
        let expected = row_bytes
            .checked_mul(out_features)
            .ok_or(QuantError::SizeOverflow {
                ty,
                elems: in_features,
            })?;
        if bytes.as_slice().len() != expected {
            return Err(QuantError::ByteLength {
                op: OP,
                ty,
                expected,
                got: bytes.as_slice().len(),
            });
        }
        let weights = if upstream {
            let storage =
                QStorage::from_data(Cow::Borrowed(bytes.as_slice()), device, ggml_dtype(ty))?;
            let tensor = QTensor::new(storage, (out_features, in_features))?;
            Weights::Upstream(QMatMul::from_qtensor(tensor)?)
        } else if ty != QuantType::F32 {
            // The length is right, so only the alignment can keep the bytes from being
            // viewed as the type's blocks.
            let aligned = WeightBlocks::new(ty, bytes.as_slice()).is_some();
            Weights::Native(if aligned { bytes } else { bytes.to_aligned() })
        } else {
            let values = quant::dequantize(ty, bytes.as_slice(), out_features * in_features)?;
            Weights::Dense(Tensor::from_vec(
                values,
                (out_features, in_features),
                &Device::Cpu,
            )?)
        };
        Ok(QLinear {
            ty,
            out_features,
            in_features,
            isa: Isa::selected(),
            weights,
        })
    }

    /// The same layer computing with `isa`'s kernels (falls back to the scalar reference
    /// where `isa` is unavailable). `Isa::Scalar` gives results that are identical on
    /// every machine.
    pub fn with_isa(mut self, isa: Isa) -> QLinear {
        self.isa = isa;
        self
    }

    /// The weight storage type.
    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    /// Output features (rows of W).
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Input features (columns of W).
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The weight as f32.
    ///
    /// returns: [out_features, in_features]
    pub fn dequantize(&self) -> Result<Tensor, QuantError> {
        match &self.weights {
            Weights::Native(bytes) => {
                let values = quant::dequantize(
                    self.ty,
                    bytes.as_slice(),
                    self.out_features * self.in_features,
                )?;
                Ok(Tensor::from_vec(
                    values,
                    (self.out_features, self.in_features),
                    &Device::Cpu,
                )?)
            }
            Weights::Dense(w) => Ok(w.clone()),
            Weights::Upstream(mm) => match mm {
                QMatMul::QTensor(q) => Ok(q.dequantize(&q.device())?),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Ok(t.to_dtype(DType::F32)?),
            },
        }
    }

    /// The same weights dequantized to an f32 CPU layer, multiplied by candle's f32
    /// matmul with no activation quantization: the exact reference a quantized layer is
    /// judged against (its values are those of [`QLinear::dequantize`]).
    ///
    /// ```
    /// use candle_quant::{quant, QLinear, QuantType};
    /// let w: Vec<f32> = (0..4 * 32).map(|i| (i % 9) as f32 * 0.1 - 0.4).collect();
    /// let q = QLinear::from_bytes(QuantType::Q4_1, 4, 32, quant::quantize(QuantType::Q4_1, &w).unwrap()).unwrap();
    /// let exact = q.to_f32().unwrap();
    /// assert_eq!(exact.quant_type(), QuantType::F32);
    /// ```
    pub fn to_f32(&self) -> Result<QLinear, QuantError> {
        Ok(QLinear {
            ty: QuantType::F32,
            out_features: self.out_features,
            in_features: self.in_features,
            isa: self.isa,
            weights: Weights::Dense(self.dequantize()?.to_device(&Device::Cpu)?),
        })
    }

    /// `x · Wᵀ`.
    ///
    /// x: [.., in_features] f32 -> [.., out_features] f32
    ///
    /// Results do not depend on the number of threads; for a given `Isa` they are
    /// bitwise reproducible run to run.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, QuantError> {
        const OP: &str = "QLinear::forward";
        let dims = x.dims();
        if dims.last() != Some(&self.in_features) {
            return Err(QuantError::InputShape {
                op: OP,
                expected_in: self.in_features,
                got: dims.to_vec(),
            });
        }
        let bytes = match &self.weights {
            Weights::Upstream(mm) => return Ok(mm.forward(x)?),
            _ if x.dtype() != DType::F32 => {
                return Err(QuantError::InputDType {
                    op: OP,
                    got: x.dtype(),
                })
            }
            Weights::Dense(w) => return Ok(x.broadcast_matmul(&w.t()?)?),
            Weights::Native(bytes) => bytes,
        };
        if !x.device().is_cpu() {
            return Err(QuantError::Unsupported {
                op: OP,
                ty: self.ty,
                device: format!(
                    "{:?} (input tensor; the layer was built for the CPU)",
                    x.device()
                ),
            });
        }
        let x = if x.is_contiguous() {
            x.clone()
        } else {
            x.contiguous()?
        };
        let m = x.elem_count() / self.in_features;
        let mut out = vec![0f32; m * self.out_features];
        {
            let (storage, layout) = x.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                return Err(QuantError::Unsupported {
                    op: OP,
                    ty: self.ty,
                    device: "non-CPU storage".to_string(),
                });
            };
            let all = cpu.as_slice::<f32>()?;
            let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
                candle_core::Error::msg("contiguous tensor without contiguous offsets")
            })?;
            self.matmul_native(bytes.as_slice(), &all[start..end], &mut out)?;
        }
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_features;
        }
        Ok(Tensor::from_vec(out, out_dims, &Device::Cpu)?)
    }

    /// `out = x · Wᵀ` on plain slices: no tensor is allocated, which is what a decoder
    /// step wants. F32 and upstream (CUDA/Metal) layers go through [`QLinear::forward`].
    ///
    /// x: [rows, in_features]; out: [rows, out_features]
    ///
    /// Bitwise equal to `forward` on the same values.
    ///
    /// ```
    /// use candle_quant::{quant, QLinear, QuantType};
    /// let w: Vec<f32> = (0..8 * 64).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    /// let layer = QLinear::from_bytes(QuantType::Q4_1, 8, 64, quant::quantize(QuantType::Q4_1, &w).unwrap()).unwrap();
    /// let x = vec![0.5f32; 64];
    /// let mut y = vec![0f32; 8];
    /// layer.forward_slice(&x, 1, &mut y).unwrap();
    /// ```
    pub fn forward_slice(&self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<(), QuantError> {
        const OP: &str = "QLinear::forward_slice";
        self.check_slices(OP, x, rows, out)?;
        match &self.weights {
            Weights::Native(bytes) => self.matmul_native(bytes.as_slice(), x, out),
            _ => self.forward_slice_via_tensor(x, rows, out),
        }
    }

    /// Multiplies one input by several layers (q/k/v, or gate/up): the input is quantized
    /// once per activation format and all output rows are computed in one pool dispatch,
    /// straight from each layer's weight bytes. Each output is bitwise equal to the
    /// layer's own [`QLinear::forward_slice`].
    ///
    /// x: [rows, in_features] (the same `in_features` for every layer);
    /// outs[k]: [rows, layers[k].out_features()]
    ///
    /// ```
    /// use candle_quant::{quant, QLinear, QuantType};
    /// let layer = |n: usize| {
    ///     let w: Vec<f32> = (0..n * 64).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
    ///     QLinear::from_bytes(QuantType::Q8_0, n, 64, quant::quantize(QuantType::Q8_0, &w).unwrap()).unwrap()
    /// };
    /// let (q, k) = (layer(8), layer(4));
    /// let x = vec![1.0f32; 64];
    /// let (mut yq, mut yk) = (vec![0f32; 8], vec![0f32; 4]);
    /// QLinear::forward_group(&[&q, &k], &x, 1, &mut [&mut yq, &mut yk]).unwrap();
    /// ```
    pub fn forward_group(
        layers: &[&QLinear],
        x: &[f32],
        rows: usize,
        outs: &mut [&mut [f32]],
    ) -> Result<(), QuantError> {
        const OP: &str = "QLinear::forward_group";
        if outs.len() != layers.len() {
            return Err(QuantError::SliceLength {
                op: OP,
                what: "outs (one output slice per layer)",
                expected: layers.len(),
                got: outs.len(),
            });
        }
        let Some(first) = layers.first() else {
            return Ok(());
        };
        for (index, (layer, out)) in layers.iter().zip(outs.iter()).enumerate() {
            if layer.in_features != first.in_features {
                return Err(QuantError::GroupInFeatures {
                    op: OP,
                    index,
                    expected: first.in_features,
                    got: layer.in_features,
                });
            }
            layer.check_slices(OP, x, rows, out)?;
        }
        let pool = kernels::global_pool()?;
        let mut members = Vec::with_capacity(layers.len());
        for (layer, out) in layers.iter().zip(outs.iter_mut()) {
            match &layer.weights {
                Weights::Native(bytes) => members.push(GroupMember {
                    weights: layer.blocks(bytes.as_slice())?,
                    out_features: layer.out_features,
                    isa: layer.isa,
                    out,
                }),
                _ => layer.forward_slice_via_tensor(x, rows, out)?,
            }
        }
        matmul_group(&mut members, first.in_features, x, &pool);
        Ok(())
    }

    fn check_slices(
        &self,
        op: &'static str,
        x: &[f32],
        rows: usize,
        out: &[f32],
    ) -> Result<(), QuantError> {
        let expected_x = rows.checked_mul(self.in_features);
        if expected_x != Some(x.len()) {
            return Err(QuantError::SliceLength {
                op,
                what: "x (rows * in_features)",
                expected: expected_x.unwrap_or(usize::MAX),
                got: x.len(),
            });
        }
        let expected_out = rows.checked_mul(self.out_features);
        if expected_out != Some(out.len()) {
            return Err(QuantError::SliceLength {
                op,
                what: "out (rows * out_features)",
                expected: expected_out.unwrap_or(usize::MAX),
                got: out.len(),
            });
        }
        Ok(())
    }

    fn forward_slice_via_tensor(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let x = Tensor::from_slice(x, (rows, self.in_features), &Device::Cpu)?;
        let y = self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        out.copy_from_slice(&y);
        Ok(())
    }

    fn blocks<'a>(&self, bytes: &'a [u8]) -> Result<WeightBlocks<'a>, QuantError> {
        WeightBlocks::new(self.ty, bytes).ok_or(QuantError::Unsupported {
            op: "QLinear::forward",
            ty: self.ty,
            device: "this crate's CPU kernels".to_string(),
        })
    }

    /// x: [m, in_features]; out: [m, out_features]
    fn matmul_native(&self, bytes: &[u8], x: &[f32], out: &mut [f32]) -> Result<(), QuantError> {
        let pool = kernels::global_pool()?;
        let mut member = [GroupMember {
            weights: self.blocks(bytes)?,
            out_features: self.out_features,
            isa: self.isa,
            out,
        }];
        matmul_group(&mut member, self.in_features, x, &pool);
        Ok(())
    }
}

impl std::fmt::Debug for QLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.weights {
            Weights::Native(_) => "cpu-native",
            Weights::Dense(_) => "cpu-dense",
            Weights::Upstream(_) => "upstream-qmatmul",
        };
        f.debug_struct("QLinear")
            .field("ty", &self.ty)
            .field("out_features", &self.out_features)
            .field("in_features", &self.in_features)
            .field("isa", &self.isa)
            .field("backend", &backend)
            .finish()
    }
}

fn ggml_dtype(ty: QuantType) -> GgmlDType {
    match ty {
        QuantType::F32 => GgmlDType::F32,
        QuantType::F16 => GgmlDType::F16,
        QuantType::BF16 => GgmlDType::BF16,
        QuantType::Q4_0 => GgmlDType::Q4_0,
        QuantType::Q4_1 => GgmlDType::Q4_1,
        QuantType::Q5_0 => GgmlDType::Q5_0,
        QuantType::Q5_1 => GgmlDType::Q5_1,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q5K => GgmlDType::Q5K,
        QuantType::Q6K => GgmlDType::Q6K,
    }
}
