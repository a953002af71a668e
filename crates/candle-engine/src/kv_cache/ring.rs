//! The ring bookkeeping of the KV cache: which position each ring index of
//! each layer holds for each sequence slot, and how many positions each
//! slot holds. It knows nothing of how keys and values are stored.
//!
//! Position `p` of a sequence lives at ring index `p % capacity`.
//! Full-attention layers get the whole context as capacity, so their ring
//! never wraps (going past it is an error reported before running);
//! sliding-window layers get `window + max_step_tokens` entries, enough for
//! the window plus the tokens of one forward step, and wrap around.

use crate::{Error, Result};

/// Marks a ring index that holds no position yet.
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
struct RingLayer {
    window: Option<usize>,
    capacity: usize,
    /// [slots, capacity]: the position stored at each ring index, or `EMPTY`.
    positions: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct Ring {
    layers: Vec<RingLayer>,
    /// Positions held by each slot (its next position).
    lengths: Vec<usize>,
    max_context: usize,
    max_step_tokens: usize,
}

impl Ring {
    /// A ring per layer (`windows[i]` is layer `i`'s sliding window, `None`
    /// for full attention) for `slots` sequences of at most `max_context`
    /// positions, fed at most `max_step_tokens` tokens per sequence a step.
    pub(crate) fn new(
        windows: &[Option<usize>],
        slots: usize,
        max_context: usize,
        max_step_tokens: usize,
    ) -> Result<Self> {
        if slots == 0 || max_context == 0 || max_step_tokens == 0 {
            return Err(Error::InvalidCacheGeometry(format!(
                "slots ({slots}), max_context ({max_context}) and max_step_tokens ({max_step_tokens}) must be positive"
            )));
        }
        if max_context > EMPTY as usize {
            return Err(Error::InvalidCacheGeometry(format!(
                "max_context {max_context} exceeds the {EMPTY} positions a ring can mark"
            )));
        }
        let layers = windows
            .iter()
            .map(|&window| {
                let capacity = match window {
                    Some(w) if w + max_step_tokens < max_context => w + max_step_tokens,
                    _ => max_context,
                };
                let entries = slots.checked_mul(capacity).ok_or_else(|| {
                    Error::InvalidCacheGeometry(format!(
                        "a cache of {slots} x {capacity} positions overflows"
                    ))
                })?;
                Ok(RingLayer {
                    window,
                    capacity,
                    positions: vec![EMPTY; entries],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            lengths: vec![0; slots],
            max_context,
            max_step_tokens,
        })
    }

    pub(crate) fn slots(&self) -> usize {
        self.lengths.len()
    }

    pub(crate) fn max_context(&self) -> usize {
        self.max_context
    }

    pub(crate) fn max_step_tokens(&self) -> usize {
        self.max_step_tokens
    }

    /// Ring entries of `layer` per slot.
    pub(crate) fn capacity(&self, layer: usize) -> usize {
        self.layers[layer].capacity
    }

    /// Bytes of the position records.
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.positions.len() * 4).sum()
    }

    pub(crate) fn len(&self, slot: usize) -> usize {
        self.lengths[slot]
    }

    /// Fails with a clear error when `new_tokens` more tokens do not fit the
    /// context of `slot`.
    pub(crate) fn check_room(&self, slot: usize, new_tokens: usize) -> Result<()> {
        let needed = self.lengths[slot] + new_tokens;
        if needed > self.max_context {
            return Err(Error::ContextExceeded {
                needed,
                max_context: self.max_context,
            });
        }
        Ok(())
    }

    /// Forgets sequence `slot` so that a new sequence can use it.
    pub(crate) fn clear(&mut self, slot: usize) {
        self.lengths[slot] = 0;
        for layer in &mut self.layers {
            let c = layer.capacity;
            layer.positions[slot * c..(slot + 1) * c].fill(EMPTY);
        }
    }

    /// Keeps the first `len` positions of `slot` and forgets the rest, so
    /// that a new sequence sharing that prefix continues from it. Fails,
    /// changing nothing, when a sliding-window layer has already overwritten
    /// an entry the continuation would attend to.
    pub(crate) fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        if len > self.lengths[slot] {
            return Err(Error::InvalidBatch(format!(
                "slot {slot} holds {} positions, cannot keep {len}",
                self.lengths[slot]
            )));
        }
        for layer in &self.layers {
            let c = layer.capacity;
            let ring = &layer.positions[slot * c..(slot + 1) * c];
            // The query at `len` sees the last `window` positions.
            let oldest = layer.window.map_or(0, |w| (len + 1).saturating_sub(w));
            if let Some(lost) = (oldest..len).find(|&p| ring[p % c] != p as u32) {
                return Err(Error::InvalidBatch(format!(
                    "slot {slot}: a sliding-window layer no longer holds position {lost}"
                )));
            }
        }
        for layer in &mut self.layers {
            let c = layer.capacity;
            for entry in &mut layer.positions[slot * c..(slot + 1) * c] {
                if *entry != EMPTY && *entry as usize >= len {
                    *entry = EMPTY;
                }
            }
        }
        self.lengths[slot] = len;
        Ok(())
    }

    /// Records that a step wrote `position` of `slot` into every layer.
    pub(crate) fn extend_len(&mut self, slot: usize, position: usize) {
        self.lengths[slot] = self.lengths[slot].max(position + 1);
    }

    /// Records `position` of `slot` as stored in `layer` and returns its
    /// ring index.
    pub(crate) fn store(&mut self, layer: usize, slot: usize, position: usize) -> usize {
        let l = &mut self.layers[layer];
        let index = position % l.capacity;
        // `new` bounds max_context by EMPTY, and positions stay below it.
        l.positions[slot * l.capacity + index] = position as u32;
        index
    }

    /// Ring entries a query at position `last` may need: until the ring
    /// wraps, index i holds position i, so the first `last + 1`.
    pub(crate) fn visible_entries(&self, layer: usize, last: usize) -> usize {
        (last + 1).min(self.layers[layer].capacity)
    }

    /// The ring indices of `layer` that a query at `position` of `slot`
    /// attends to: positions up to its own, within the layer's window.
    pub(crate) fn visible(&self, layer: usize, slot: usize, position: usize) -> Vec<usize> {
        let l = &self.layers[layer];
        let oldest = l.oldest_seen(position);
        let stored = &l.positions[slot * l.capacity..(slot + 1) * l.capacity];
        // Until the ring wraps, index i holds position i: scan only the
        // indices that can be visible instead of the whole capacity.
        let scan = if position < l.capacity {
            oldest..position + 1
        } else {
            0..l.capacity
        };
        scan.filter(|&i| sees(stored[i], position, oldest))
            .collect()
    }

    /// The additive mask `[positions.len(), entries]` over the first
    /// `entries` ring indices of `slot` in `layer` (0 where a query may
    /// attend, -inf elsewhere), with `entries` from
    /// [`Ring::visible_entries`] of the last position.
    pub(crate) fn mask(&self, layer: usize, slot: usize, positions: &[usize]) -> (Vec<f32>, usize) {
        let l = &self.layers[layer];
        let last = positions.iter().copied().max().unwrap_or(0);
        let entries = self.visible_entries(layer, last);
        let stored = &l.positions[slot * l.capacity..slot * l.capacity + entries];
        let mask = positions
            .iter()
            .flat_map(|&position| {
                let oldest = l.oldest_seen(position);
                stored.iter().map(move |&p| {
                    if sees(p, position, oldest) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        (mask, entries)
    }

    /// The window of `layer` (`None` for full attention).
    pub(crate) fn window(&self, layer: usize) -> Option<usize> {
        self.layers[layer].window
    }
}

impl RingLayer {
    /// The oldest position a query at `position` sees.
    fn oldest_seen(&self, position: usize) -> usize {
        self.window.map_or(0, |w| (position + 1).saturating_sub(w))
    }
}

/// Whether a query at `position` whose window starts at `oldest` sees the
/// entry holding `stored`.
fn sees(stored: u32, position: usize, oldest: usize) -> bool {
    stored != EMPTY && (stored as usize) <= position && (stored as usize) >= oldest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeding_the_context_is_a_clear_error() {
        let mut ring = Ring::new(&[None], 1, 8, 4).unwrap();
        for p in 0..6 {
            ring.store(0, 0, p);
            ring.extend_len(0, p);
        }
        assert!(ring.check_room(0, 2).is_ok());
        let err = ring.check_room(0, 3).unwrap_err();
        assert!(
            err.to_string().contains('9') && err.to_string().contains('8'),
            "{err}"
        );
        ring.clear(0);
        assert_eq!(ring.len(0), 0);
        assert!(ring.visible(0, 0, 3).is_empty());
    }

    #[test]
    fn a_wrapped_window_sees_exactly_its_last_positions() {
        // Window 3 and steps of 2: capacity 5, so position 11 sits at index 1.
        let mut ring = Ring::new(&[Some(3)], 1, 64, 2).unwrap();
        for p in 0..12 {
            ring.store(0, 0, p);
        }
        let mut seen = ring.visible(0, 0, 11);
        seen.sort();
        // Positions 9, 10, 11 sit at ring indices 4, 0, 1.
        assert_eq!(seen, vec![0, 1, 4]);
        let (mask, entries) = ring.mask(0, 0, &[10, 11]);
        assert_eq!(entries, 5);
        let keep = |row: &[f32]| row.iter().map(|&m| m == 0.0).collect::<Vec<_>>();
        // Index 0: 10, 1: 11, 2: 7, 3: 8, 4: 9.
        assert_eq!(keep(&mask[..5]), [true, false, false, true, true]);
        assert_eq!(keep(&mask[5..]), [true, true, false, false, true]);
    }

    #[test]
    fn truncate_keeps_a_prefix_unless_a_window_ring_overwrote_it() {
        // Window 4 with 2-token steps: a ring of 6 entries per slot.
        let mut ring = Ring::new(&[None, Some(4)], 1, 16, 2).unwrap();
        for position in 0..10 {
            for layer in 0..2 {
                ring.store(layer, 0, position);
            }
            ring.extend_len(0, position);
        }
        // Positions 6..10 overwrote ring entries 0..4 (positions 0..4): a
        // query at 4 would need positions 1..4 of the window.
        let err = ring.truncate(0, 4).unwrap_err().to_string();
        assert!(err.contains("no longer holds position 1"), "{err}");
        assert_eq!(ring.len(0), 10);
        // A query at 8 needs positions 5..8, all still in the ring.
        ring.truncate(0, 8).unwrap();
        assert_eq!(ring.len(0), 8);
        assert!(ring.truncate(0, 9).is_err());
        assert_eq!(ring.layers[1].positions, [6, 7, EMPTY, EMPTY, 4, 5]);
    }
}
