//! `-t/--threads`: the one thread-count flag of every command that runs a
//! model, applied the same way everywhere.

use anyhow::bail;

#[derive(clap::Args, Debug)]
pub struct ThreadsArg {
    /// Threads for the matmuls and candle's kernels (default:
    /// $HANZO_NUM_THREADS, else every core).
    #[arg(short, long)]
    threads: Option<usize>,
}

impl ThreadsArg {
    /// Sets the thread count, if given, and returns the count in effect.
    /// Call it before anything starts a thread pool.
    pub fn apply(&self) -> anyhow::Result<usize> {
        if let Some(threads) = self.threads {
            if threads == 0 {
                bail!("--threads must be at least 1, got 0");
            }
            // candle's own kernels (element-wise and attention ops) read
            // these when their pools start.
            std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            candle_quant::kernels::set_num_threads(threads)?;
        }
        Ok(candle_quant::kernels::num_threads()?)
    }
}
