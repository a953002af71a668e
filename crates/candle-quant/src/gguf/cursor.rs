//! Bounds-checked little-endian reads over an untrusted byte slice.
//!
//! Every read checks the bytes remaining before slicing, and field names are
//! built lazily (`&dyn Fn() -> String`) so that validating a 262k-entry
//! vocabulary does not allocate one error label per token.

use super::error::{GgufError, Result};
use super::types::ValueType;
use super::value::{ArrayView, MetadataValue};

/// Nested arrays are legal GGUF but no model uses more than one level;
/// the limit bounds recursion depth on hostile input.
pub(crate) const MAX_ARRAY_NESTING: usize = 4;

pub(crate) struct Cursor<'f> {
    buf: &'f [u8],
    pos: usize,
}

impl<'f> Cursor<'f> {
    pub(crate) fn new(buf: &'f [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'f [u8]> {
        let available = self.remaining();
        let truncated = || GgufError::Truncated {
            field: field(),
            offset: self.pos,
            needed: n,
            available,
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        if n > available {
            return Err(truncated());
        }
        let bytes = self.buf.get(self.pos..self.pos + n).ok_or_else(truncated)?;
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array(field)?))
    }

    /// Fails with [`GgufError::CountExceedsFile`] when `count` items of at
    /// least `min_bytes_each` cannot fit in what is left: the check that
    /// keeps a forged count from driving an allocation or a long loop.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_bytes_each: u64,
        field: &dyn Fn() -> String,
    ) -> Result<()> {
        let fits = count
            .checked_mul(min_bytes_each)
            .is_some_and(|needed| needed <= self.remaining() as u64);
        if fits {
            Ok(())
        } else {
            Err(GgufError::CountExceedsFile {
                field: field(),
                count,
                min_bytes_each,
                available: self.remaining(),
            })
        }
    }

    pub(crate) fn string(&mut self, field: &dyn Fn() -> String) -> Result<&'f str> {
        let len = self.u64(&|| format!("{} length", field()))?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|e| GgufError::InvalidUtf8 {
            field: field(),
            valid_up_to: e.valid_up_to(),
        })
    }

    pub(crate) fn value_type(&mut self, field: &dyn Fn() -> String) -> Result<ValueType> {
        let id = self.u32(&|| format!("{} type", field()))?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            field: field(),
            found: id,
        })
    }

    /// Reads and fully validates one value of type `vtype` (for arrays: every
    /// element, recursively, up to [`MAX_ARRAY_NESTING`] levels).
    pub(crate) fn value(
        &mut self,
        vtype: ValueType,
        depth: usize,
        field: &dyn Fn() -> String,
    ) -> Result<MetadataValue<'f>> {
        Ok(match vtype {
            ValueType::U8 => MetadataValue::U8(self.take_array::<1>(field)?[0]),
            ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(self.take_array(field)?)),
            ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(self.take_array(field)?)),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.take_array(field)?)),
            ValueType::U32 => MetadataValue::U32(self.u32(field)?),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.take_array(field)?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.take_array(field)?)),
            ValueType::U64 => MetadataValue::U64(self.u64(field)?),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.take_array(field)?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.take_array(field)?)),
            ValueType::Bool => {
                let byte = self.take_array::<1>(field)?[0];
                match byte {
                    0 => MetadataValue::Bool(false),
                    1 => MetadataValue::Bool(true),
                    found => {
                        return Err(GgufError::InvalidBool {
                            field: field(),
                            found,
                        })
                    }
                }
            }
            ValueType::String => MetadataValue::String(self.string(field)?),
            ValueType::Array => MetadataValue::Array(self.array(depth + 1, field)?),
        })
    }

    fn array(&mut self, depth: usize, field: &dyn Fn() -> String) -> Result<ArrayView<'f>> {
        if depth > MAX_ARRAY_NESTING {
            return Err(GgufError::ArrayNestingTooDeep {
                field: field(),
                depth,
                limit: MAX_ARRAY_NESTING,
            });
        }
        let element_type = self.value_type(&|| format!("{} element", field()))?;
        let count = self.u64(&|| format!("{} count", field()))?;
        self.check_count(count, element_type.min_encoded_size(), &|| {
            format!("{} count", field())
        })?;
        let start = self.pos;
        match element_type.fixed_size() {
            Some(size) if element_type != ValueType::Bool => {
                // check_count above proved count * size fits in the file.
                self.take(count * size as u64, field)?;
            }
            _ => {
                for index in 0..count {
                    self.value(element_type, depth, &|| format!("{}[{index}]", field()))?;
                }
            }
        }
        let bytes = self.buf.get(start..self.pos).unwrap_or_default();
        // The count was bounded by the bytes left, so it fits in usize.
        Ok(ArrayView::new(element_type, count as usize, bytes))
    }
}
