//! A model file arriving in chunks (a `fetch` body, a `File` stream) is
//! written into one buffer reserved up front for its announced size, so the
//! bytes are held once, in wasm memory, and never copied whole.

use std::fmt;

/// Why a chunked load failed.
#[derive(Debug, PartialEq, Eq)]
pub enum BufferError {
    /// wasm memory could not grow to hold the whole file.
    OutOfMemory { bytes: usize },
    /// More bytes were pushed than announced.
    Overflow { total: usize, pushed: usize },
    /// `finish` before every announced byte arrived.
    Incomplete { total: usize, received: usize },
}

impl fmt::Display for BufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory { bytes } => write!(
                f,
                "cannot reserve {bytes} bytes of wasm memory for the model \
                 (wasm32 memory ends at 4 GiB, and browsers often allow less)"
            ),
            Self::Overflow { total, pushed } => write!(
                f,
                "{pushed} bytes pushed but the loader was created for {total}; \
                 pass the file's exact size to new()"
            ),
            Self::Incomplete { total, received } => write!(
                f,
                "finish() after {received} of the {total} announced bytes; push the rest first"
            ),
        }
    }
}

impl std::error::Error for BufferError {}

/// A buffer of a size fixed at creation, filled by appending.
#[derive(Debug)]
pub struct ChunkedBuffer {
    bytes: Vec<u8>,
    total: usize,
}

impl ChunkedBuffer {
    /// Reserves `total` bytes, failing instead of aborting when memory
    /// cannot grow that far.
    pub fn new(total: usize) -> Result<Self, BufferError> {
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(total)
            .map_err(|_| BufferError::OutOfMemory { bytes: total })?;
        Ok(Self { bytes, total })
    }

    /// Appends `chunk`; a chunk that would pass the announced size is
    /// refused whole.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BufferError> {
        let pushed = self.bytes.len().saturating_add(chunk.len());
        if pushed > self.total {
            return Err(BufferError::Overflow {
                total: self.total,
                pushed,
            });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn received(&self) -> usize {
        self.bytes.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// The complete file.
    pub fn finish(self) -> Result<Vec<u8>, BufferError> {
        if self.bytes.len() != self.total {
            return Err(BufferError::Incomplete {
                total: self.total,
                received: self.bytes.len(),
            });
        }
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fill_the_reserved_buffer_in_place() {
        let mut buffer = ChunkedBuffer::new(10).unwrap();
        let start = buffer.bytes.as_ptr();
        buffer.push(b"hello").unwrap();
        buffer.push(b" wasm").unwrap();
        assert_eq!(buffer.bytes.as_ptr(), start, "no reallocation");
        assert_eq!(buffer.finish().unwrap(), b"hello wasm");
    }

    #[test]
    fn sizes_that_do_not_match_are_errors() {
        let mut buffer = ChunkedBuffer::new(4).unwrap();
        buffer.push(b"abc").unwrap();
        assert_eq!(
            buffer.push(b"de"),
            Err(BufferError::Overflow {
                total: 4,
                pushed: 5
            })
        );
        assert_eq!(
            buffer.finish(),
            Err(BufferError::Incomplete {
                total: 4,
                received: 3
            })
        );
        assert_eq!(
            ChunkedBuffer::new(usize::MAX).unwrap_err(),
            BufferError::OutOfMemory { bytes: usize::MAX }
        );
    }
}
