//! Fast paths for the quantized dot products, selected at run time, and the threaded
//! matrix-vector / matrix-matrix driver built on them.

#[cfg(feature = "tensor")]
pub(crate) mod matmul;
mod pool;
pub mod sgemm;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86;

pub use pool::{default_num_threads, global_pool, num_threads, set_num_threads, ThreadPool};

use half::{bf16, f16};

use crate::quant::{
    BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};

/// Instruction sets the dot products have implementations for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The portable reference kernels in [`crate::quant`].
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL, VNNI and BITALG on top of [`Isa::Avx2`] (Ice Lake,
    /// Zen 4 and later): bitwise equal to AVX2 except the Q4_K matmul, which gives
    /// the scalar reference's bits (as Q4_0 and Q5_0 do on both), and F16/BF16,
    /// which sum 16 lanes instead of 8.
    Avx512Vnni,
    /// wasm32 SIMD (compile-time `+simd128`).
    Simd128,
}

impl Isa {
    /// Whether this CPU (or build, for wasm) can run the kernels of `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            Isa::Avx512Vnni => {
                Isa::Avx2.is_available()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("avx512bitalg")
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest instruction set available here.
    pub fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx2, Isa::Simd128]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// What new layers compute with: the set `HANZO_ISA` names (`scalar`, `avx2`,
    /// `avx512`, `simd128`) when it is available here, else [`Isa::best`]. Lets an
    /// AVX-512 machine reproduce an AVX2 one's speed and bits, or any machine the
    /// portable ones.
    pub fn selected() -> Isa {
        std::env::var("HANZO_ISA")
            .ok()
            .and_then(|name| Isa::named(name.trim()))
            .filter(|isa| isa.is_available())
            .unwrap_or_else(Isa::best)
    }

    /// The set `HANZO_ISA` calls `name`.
    pub fn named(name: &str) -> Option<Isa> {
        Some(match name.to_ascii_lowercase().as_str() {
            "scalar" => Isa::Scalar,
            "avx2" => Isa::Avx2,
            "avx512" | "avx512vnni" => Isa::Avx512Vnni,
            "simd128" => Isa::Simd128,
            _ => return None,
        })
    }
}

/// A dot product of a row of weight blocks with the matching activation blocks.
pub type DotFn<B> = fn(&[B], &[<B as BlockFormat>::Act]) -> f32;

/// One row of weight blocks against four activation rows at once (prefill).
pub type Dot4Fn<B> = fn(&[B], [&[<B as BlockFormat>::Act]; 4]) -> [f32; 4];

/// What the VNNI kernels of the symmetric 32-value formats (Q4_0, Q5_0, Q8_0) read
/// per activation block besides its quants, computed once per matmul and shared by
/// every weight row. Those kernels make the weight quants unsigned, `u = q + bias`,
/// so one `vpdpbusd` takes them without the sign transfer onto the activations;
/// starting each lane from `-bias · (its 4 activation quants' sum)` leaves exactly
/// Σ q·a in every lane.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct ActAux {
    /// Per lane `i` (activation quants `4i..4i+4`): `-bias · Σ a`.
    pub lane_init: [i32; 8],
    /// The activation block's scale, converted from f16 once.
    pub d: f32,
    /// `-bias · Σ a` over the whole block, for the kernels that keep one lane per
    /// weight row.
    pub block_init: i32,
}

impl ActAux {
    /// The side data of one Q8_0 activation block for weights biased by `bias`.
    pub fn new(a: &BlockQ8_0, bias: i32) -> ActAux {
        let lane_init: [i32; 8] = std::array::from_fn(|i| {
            -bias
                * a.qs[4 * i..4 * i + 4]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>()
        });
        ActAux {
            lane_init,
            d: a.d.to_f32(),
            block_init: lane_init.iter().sum(),
        }
    }
}

/// `out[i * out_features + r] = w_r · a_i` for weight rows `rows` and activation rows
/// `tokens` (`ActAux` alongside the activations), every value bitwise equal to the
/// format's `dot_fn` (Q8_0) or to its scalar `dot_ref` (Q4_0, Q5_0). Arguments:
/// weights, blocks per row, rows, activations, aux, tokens, out, out_features.
///
/// # Safety
/// `out` must be valid for writes at every such index, elements no other thread
/// touches during the call; the slices must hold every row and token named.
pub type AuxTileFn<B> = unsafe fn(
    &[B],
    usize,
    std::ops::Range<usize>,
    &[<B as BlockFormat>::Act],
    &[ActAux],
    std::ops::Range<usize>,
    *mut f32,
    usize,
);

/// `out[i * out_features + r] = w_r · a_i` for weight rows `rows` and activation rows
/// `tokens`, every value bitwise equal to the format's `dot_ref`. Arguments: weights,
/// blocks per row, rows, activations, tokens, out, out_features.
///
/// # Safety
/// As [`AuxTileFn`].
pub type TileFn<B> = unsafe fn(
    &[B],
    usize,
    std::ops::Range<usize>,
    &[<B as BlockFormat>::Act],
    std::ops::Range<usize>,
    *mut f32,
    usize,
);

/// A block format with run-time selectable dot-product kernels.
pub trait Kernel: BlockFormat {
    /// The tile kernel for `isa` that needs no side data, when it has one for this
    /// format; the matmul then uses it for every output.
    fn tile(isa: Isa) -> Option<TileFn<Self>> {
        let _ = isa;
        None
    }

    /// The bias that makes this format's weight quants unsigned for its [`ActAux`]
    /// kernels, for the formats that have them.
    const AUX_BIAS: Option<i32> = None;

    /// The tile kernel reading [`ActAux`] (built with `AUX_BIAS`), when `isa` has one
    /// for this format.
    fn aux_tile(isa: Isa) -> Option<AuxTileFn<Self>> {
        let _ = isa;
        None
    }

    /// The dot product for `isa`, or the scalar reference when `isa` is unavailable here
    /// or has no kernel for this format.
    fn dot_fn(isa: Isa) -> DotFn<Self>;

    /// A four-activation-row kernel whose every result is bitwise equal to
    /// `dot_fn(isa)`'s, when `isa` has one for this format.
    fn dot4_fn(isa: Isa) -> Option<Dot4Fn<Self>> {
        let _ = isa;
        None
    }
}

macro_rules! kernel {
    // `-`: no simd128 kernel for the format; wasm32 runs the scalar reference.
    (@simd128 $block:ty, -) => {
        <$block as BlockFormat>::dot_ref
    };
    (@simd128 $block:ty, $simd128:ident) => {
        simd128::$simd128
    };
    (@dot $block:ty, $avx2:ident, $simd128:tt) => {
        fn dot_fn(isa: Isa) -> DotFn<Self> {
            match isa {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                Isa::Avx2 if isa.is_available() => {
                    fn dot(w: &[$block], a: &[<$block as BlockFormat>::Act]) -> f32 {
                        // SAFETY: only handed out after `is_available` confirmed
                        // AVX2, FMA and F16C.
                        unsafe { x86::avx2::$avx2(w, a) }
                    }
                    dot
                }
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                Isa::Avx512Vnni if isa.is_available() => {
                    fn dot(w: &[$block], a: &[<$block as BlockFormat>::Act]) -> f32 {
                        // SAFETY: only handed out after `is_available` confirmed
                        // AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
                        unsafe { x86::avx512::$avx2(w, a) }
                    }
                    dot
                }
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                Isa::Simd128 => kernel!(@simd128 $block, $simd128),
                _ => <$block as BlockFormat>::dot_ref,
            }
        }
    };
    (@aux $block:ty) => {};
    (@aux $block:ty, $bias:literal, $($isa:ident => $aux:path),+) => {
        const AUX_BIAS: Option<i32> = Some($bias);

        fn aux_tile(isa: Isa) -> Option<AuxTileFn<Self>> {
            match isa {
                // Handed out only after `is_available` confirmed the instruction set's
                // features; the rest of the kernel's safety contract is the caller's
                // (see `AuxTileFn`).
                $(
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::$isa if isa.is_available() => Some($aux),
                )+
                _ => None,
            }
        }
    };
    (@tile $block:ty) => {};
    (@tile $block:ty, $($isa:ident => $tile:path),+) => {
        fn tile(isa: Isa) -> Option<TileFn<Self>> {
            match isa {
                // As for `aux_tile`.
                $(
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::$isa if isa.is_available() => Some($tile),
                )+
                _ => None,
            }
        }
    };
    ($block:ty, $avx2:ident, $avx2_dot4:ident, $simd128:tt
        $(, $bias:literal, [$($aux_isa:ident => $aux:path),+])?
        $(; tile [$($tile_isa:ident => $tile:path),+])?) => {
        impl Kernel for $block {
            kernel!(@dot $block, $avx2, $simd128);
            kernel!(@aux $block $(, $bias, $($aux_isa => $aux),+)?);
            kernel!(@tile $block $(, $($tile_isa => $tile),+)?);

            fn dot4_fn(isa: Isa) -> Option<Dot4Fn<Self>> {
                match isa {
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 if isa.is_available() => {
                        fn dot4(
                            w: &[$block],
                            a: [&[<$block as BlockFormat>::Act]; 4],
                        ) -> [f32; 4] {
                            // SAFETY: only handed out after `is_available` confirmed
                            // AVX2, FMA and F16C.
                            unsafe { x86::avx2::$avx2_dot4(w, a) }
                        }
                        Some(dot4)
                    }
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx512Vnni if isa.is_available() => {
                        fn dot4(
                            w: &[$block],
                            a: [&[<$block as BlockFormat>::Act]; 4],
                        ) -> [f32; 4] {
                            // SAFETY: only handed out after `is_available` confirmed
                            // AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
                            unsafe { x86::avx512::$avx2_dot4(w, a) }
                        }
                        Some(dot4)
                    }
                    _ => None,
                }
            }
        }
    };
}

kernel!(BlockQ4_0, dot_q4_0, dot4_q4_0, dot_q4_0, 8, [
    Avx2 => x86::rows8::avx2::rows8_tile_q4_0,
    Avx512Vnni => x86::rows8::avx512::rows8_tile_q4_0
]);
kernel!(BlockQ4_1, dot_q4_1, dot4_q4_1, dot_q4_1; tile [
    Avx2 => x86::rows8::avx2::rows8_tile_q4_1,
    Avx512Vnni => x86::rows8::avx512::rows8_tile_q4_1
]);
kernel!(BlockQ5_0, dot_q5_0, dot4_q5_0, dot_q5_0, 16, [
    Avx2 => x86::rows8::avx2::rows8_tile_q5_0,
    Avx512Vnni => x86::rows8::avx512::rows8_tile_q5_0
]);
kernel!(BlockQ5_1, dot_q5_1, dot4_q5_1, dot_q5_1; tile [
    Avx2 => x86::rows8::avx2::rows8_tile_q5_1,
    Avx512Vnni => x86::rows8::avx512::rows8_tile_q5_1
]);
kernel!(BlockQ8_0, dot_q8_0, dot4_q8_0, dot_q8_0, 128, [
    Avx512Vnni => x86::avx512::aux_tile_q8_0
]);
kernel!(BlockQ4K, dot_q4_k, dot4_q4_k, dot_q4_k; tile [
    Avx512Vnni => x86::rows8::avx512::rows8_tile_q4_k
]);
kernel!(BlockQ5K, dot_q5_k, dot4_q5_k, dot_q5_k);
kernel!(BlockQ6K, dot_q6_k, dot4_q6_k, dot_q6_k);
// simd128 has no f16 -> f32 conversion, so wasm32 runs the scalar reference for
// F16 and BF16 (a widening by integer bit operations is left for when a browser
// build needs half-precision weights).
kernel!(f16, dot_f16, dot4_f16, -);
kernel!(bf16, dot_bf16, dot4_bf16, -);

#[cfg(test)]
mod tests;
