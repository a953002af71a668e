//! Metadata values: borrowed views into a validated file, and owned values
//! for the writer.

use std::fmt;

use super::cursor::Cursor;
use super::types::ValueType;

/// One metadata value, borrowed from the file it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetadataValue<'f> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(&'f str),
    Array(ArrayView<'f>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'f> MetadataValue<'f> {
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// A human-readable type, e.g. `uint32` or `array[string; 49152]`.
    pub fn type_description(&self) -> String {
        match self {
            Self::Array(a) => format!("array[{}; {}]", a.element_type(), a.len()),
            other => other.value_type().to_string(),
        }
    }

    /// The value as an integer, whatever its integer width; `None` for
    /// non-integer types.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Copies the value out of the file, e.g. to re-emit it with
    /// [`GgufWriter`](super::GgufWriter).
    pub fn to_owned_value(&self) -> Value {
        match *self {
            Self::U8(v) => Value::U8(v),
            Self::I8(v) => Value::I8(v),
            Self::U16(v) => Value::U16(v),
            Self::I16(v) => Value::I16(v),
            Self::U32(v) => Value::U32(v),
            Self::I32(v) => Value::I32(v),
            Self::F32(v) => Value::F32(v),
            Self::Bool(v) => Value::Bool(v),
            Self::String(v) => Value::String(v.to_owned()),
            Self::U64(v) => Value::U64(v),
            Self::I64(v) => Value::I64(v),
            Self::F64(v) => Value::F64(v),
            Self::Array(a) => Value::Array(
                a.element_type(),
                a.iter().map(|v| v.to_owned_value()).collect(),
            ),
        }
    }
}

impl fmt::Display for MetadataValue<'_> {
    /// Arrays longer than 8 elements are summarised: a 49k-token vocabulary
    /// prints its first elements and a count, not 49k lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(v) => write!(f, "{:?}", truncate_chars(v, 120)),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > SHOWN {
                    write!(f, ", ... ({} more)", a.len() - SHOWN)?;
                }
                f.write_str("]")
            }
        }
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// An array value: its element type, its length and its encoded elements,
/// borrowed from the file. Elements were validated when the file was opened;
/// they are decoded on iteration.
#[derive(Clone, Copy, PartialEq)]
pub struct ArrayView<'f> {
    element_type: ValueType,
    len: usize,
    bytes: &'f [u8],
}

impl fmt::Debug for ArrayView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayView")
            .field("element_type", &self.element_type)
            .field("len", &self.len)
            .field("encoded_bytes", &self.bytes.len())
            .finish()
    }
}

impl<'f> ArrayView<'f> {
    pub(crate) fn new(element_type: ValueType, len: usize, bytes: &'f [u8]) -> Self {
        Self {
            element_type,
            len,
            bytes,
        }
    }

    pub fn element_type(&self) -> ValueType {
        self.element_type
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements, e.g. to reinterpret a `float32` array in place.
    pub fn raw_bytes(&self) -> &'f [u8] {
        self.bytes
    }

    /// Decodes a fixed-width numeric array in one pass over its bytes; the
    /// caller has checked the element type.
    pub(crate) fn fixed<const N: usize, T>(&self, decode: fn([u8; N]) -> T) -> Vec<T> {
        self.bytes
            .chunks_exact(N)
            .map(|chunk| decode(chunk.try_into().unwrap_or([0; N])))
            .collect()
    }

    /// The elements of a string array, without going through
    /// [`MetadataValue`]: vocabularies hold up to 262k of them. The caller
    /// has checked the element type; lengths and UTF-8 were validated when
    /// the file was opened.
    pub(crate) fn strs(&self) -> Vec<&'f str> {
        let mut out = Vec::with_capacity(self.len);
        let mut rest = self.bytes;
        while let Some((len, tail)) = rest.split_first_chunk::<8>() {
            let Some((s, tail)) = usize::try_from(u64::from_le_bytes(*len))
                .ok()
                .and_then(|len| tail.split_at_checked(len))
            else {
                break;
            };
            out.push(std::str::from_utf8(s).unwrap_or_default());
            rest = tail;
        }
        out
    }

    pub fn iter(&self) -> ArrayIter<'f> {
        ArrayIter {
            element_type: self.element_type,
            cursor: Cursor::new(self.bytes, 0),
            remaining: self.len,
        }
    }
}

impl<'f> IntoIterator for ArrayView<'f> {
    type Item = MetadataValue<'f>;
    type IntoIter = ArrayIter<'f>;

    fn into_iter(self) -> ArrayIter<'f> {
        self.iter()
    }
}

/// Iterator over the elements of an [`ArrayView`].
pub struct ArrayIter<'f> {
    element_type: ValueType,
    cursor: Cursor<'f>,
    remaining: usize,
}

impl<'f> Iterator for ArrayIter<'f> {
    type Item = MetadataValue<'f>;

    fn next(&mut self) -> Option<MetadataValue<'f>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The elements were validated when the file was opened, so a decode
        // failure here cannot happen; ending the iteration is the safe
        // answer if it ever did.
        match self
            .cursor
            .value(self.element_type, 1, &|| String::from("array element"))
        {
            Ok(v) => Some(v),
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// An owned metadata value, for [`GgufWriter`](super::GgufWriter).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type and elements; the writer rejects elements whose type
    /// differs from the declared one.
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(..) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// An array of strings, e.g. `tokenizer.ggml.tokens`.
    pub fn string_array<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        Self::Array(
            ValueType::String,
            items.into_iter().map(|s| Value::String(s.into())).collect(),
        )
    }

    /// An array of any element type convertible to [`Value`].
    pub fn array<T: Into<Value>>(
        element_type: ValueType,
        items: impl IntoIterator<Item = T>,
    ) -> Self {
        Self::Array(element_type, items.into_iter().map(Into::into).collect())
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        })*
    };
}

value_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    f32 => F32, bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}
