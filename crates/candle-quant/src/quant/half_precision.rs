//! F16 and BF16 weights, used as stored: each value is its own one-element "block",
//! and the activations they multiply stay f32 (nothing is quantized), so the activation
//! side of their dot products is plain `f32`.

use half::{bf16, f16};

use super::{ActBlock, BlockFormat, QuantType};

impl ActBlock for f32 {
    const ELEMS: usize = 1;

    fn quantize(src: &[f32]) -> Self {
        src[0]
    }

    fn dequantize(&self, dst: &mut [f32]) {
        dst[0] = *self;
    }
}

macro_rules! half_precision {
    ($ty:ty, $quant:expr) => {
        impl BlockFormat for $ty {
            const TYPE: QuantType = $quant;
            const ELEMS: usize = 1;
            type Act = f32;

            /// Round to nearest, ties to even (as PyTorch's `.to(dtype)`).
            fn quantize(src: &[f32]) -> Self {
                <$ty>::from_f32(src[0])
            }

            fn dequantize(&self, dst: &mut [f32]) {
                dst[0] = self.to_f32();
            }

            /// `Σ w_i a_i` in index order, each product and each sum rounded to f32.
            /// Widening a 16-bit float to f32 is exact, so the only roundings are
            /// those of an f32 dot product.
            fn dot_ref(weights: &[Self], acts: &[f32]) -> f32 {
                weights
                    .iter()
                    .zip(acts)
                    .fold(0.0, |sum, (w, &a)| sum + w.to_f32() * a)
            }
        }
    };
}

half_precision!(f16, QuantType::F16);
half_precision!(bf16, QuantType::BF16);
