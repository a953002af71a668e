use candle_quant::kernels::Isa;
use candle_quant::{quant, QLinear, QuantType};
use std::time::Instant;
fn main() {
    let shapes = [
        (QuantType::Q5_0, 2048usize, 640usize, 128usize),
        (QuantType::Q8_0, 256, 640, 128),
        (QuantType::Q4K, 640, 1024, 128),
        (QuantType::Q6K, 640, 2048, 128),
        (QuantType::Q5_0, 2048, 640, 1),
    ];
    for (ty, out_f, in_f, m) in shapes {
        let w: Vec<f32> = (0..out_f * in_f)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let bytes = quant::quantize(ty, &w).unwrap();
        let x: Vec<f32> = (0..m * in_f)
            .map(|i| ((i * 40503) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let mut out = vec![0f32; m * out_f];
        let mut best = [f64::MAX; 2];
        for round in 0..6 {
            let isa = [Isa::Avx2, Isa::Avx512Vnni][round % 2];
            let q = QLinear::from_bytes(ty, out_f, in_f, bytes.clone())
                .unwrap()
                .with_isa(isa);
            q.forward_slice(&x, m, &mut out).unwrap();
            let n = if m == 1 { 300 } else { 30 };
            let t = Instant::now();
            for _ in 0..n {
                q.forward_slice(&x, m, &mut out).unwrap();
            }
            best[round % 2] = best[round % 2].min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        let gmac = (out_f * in_f * m) as f64 / 1e3;
        println!("{ty:?} {out_f}x{in_f} m={m}: avx2 {:.0} us ({:.1} GMAC/s)  avx512 {:.0} us ({:.1} GMAC/s)", best[0], gmac / best[0], best[1], gmac / best[1]);
    }
}
