//! A reader for change events written with the current `schemas/change-event.avsc`
//! (local id [`super::CHANGE_EVENT_ID`], or any id whose schema has the same canonical
//! form): Avro binary straight into a [`ChangeEvent`], without apache-avro's generic
//! `Value` tree, and with the vector read into one allocation of its exact size.
//!
//! It follows apache-avro's decoding rules for this schema (zig-zag varints of at most
//! ten bytes, `int` enum indexes, blocked arrays and maps with negative counts followed
//! by a byte size, strict booleans and UTF-8) so it accepts what the generic path accepts
//! and yields the same event; `codec/change_reader/tests.rs` decodes the same bytes both
//! ways. Other writer schemas go through apache-avro's resolution in [`super::Codec`].

use crate::event::{
    CaptureMode, ChangeEvent, EntityKind, Op, PropertyValue, RelationshipEnds, Source,
};
use std::collections::BTreeMap;

/// Decode the Avro body (after the 5-byte wire header) of a change event written with
/// the current schema. Trailing bytes are left to the caller to report.
///
/// # Errors
/// A message naming what is malformed: truncated data, a bad length, union branch, enum
/// index, boolean or UTF-8 string.
pub fn read_change(body: &mut &[u8]) -> Result<ChangeEvent, String> {
    let mut r = Reader { bytes: body };
    let event_id = r.string()?;
    let kind = match r.enum_index(2)? {
        0 => EntityKind::Node,
        _ => EntityKind::Relationship,
    };
    let key = r.string()?;
    let labels = r.strings()?;
    let relationship = match r.union_index(2)? {
        0 => None,
        _ => Some(RelationshipEnds {
            rel_type: r.string()?,
            start_key: r.string()?,
            end_key: r.string()?,
        }),
    };
    let op = match r.enum_index(2)? {
        0 => Op::Upsert,
        _ => Op::Delete,
    };
    let version = r.long()?;
    let commit_time_ms = r.long()?;
    let properties = r.properties()?;
    let vector = match r.union_index(2)? {
        0 => None,
        _ => Some(r.floats()?),
    };
    let db = r.string()?;
    let mode = match r.enum_index(4)? {
        0 => CaptureMode::Outbox,
        1 => CaptureMode::Direct,
        2 => CaptureMode::Backfill,
        _ => CaptureMode::Repair,
    };
    let traceparent = match r.union_index(2)? {
        0 => None,
        _ => Some(r.string()?),
    };
    let removed_labels = r.strings()?;
    Ok(ChangeEvent {
        event_id,
        kind,
        key,
        labels,
        removed_labels,
        relationship,
        op,
        version,
        commit_time_ms,
        properties,
        vector,
        source: Source { db, mode },
        traceparent,
    })
}

/// A cursor over Avro binary data.
struct Reader<'a, 'b> {
    bytes: &'b mut &'a [u8],
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        *self.bytes = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A varint of at most ten bytes (bits beyond 64 dropped, as apache-avro does).
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in 0..10 {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (shift * 7);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than ten bytes".into())
    }

    fn long(&mut self) -> Result<i64, String> {
        let z = self.varint()?;
        Ok(if z & 1 == 0 {
            (z >> 1) as i64
        } else {
            !(z >> 1) as i64
        })
    }

    /// A length: non-negative and no longer than what is left.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len())
            .ok_or_else(|| format!("bad length {n} with {} bytes left", self.bytes.len()))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("string is not UTF-8: {e}"))
    }

    /// An enum index, read as an Avro `int`.
    fn enum_index(&mut self, symbols: usize) -> Result<usize, String> {
        let index = self.long()?;
        i32::try_from(index)
            .ok()
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < symbols)
            .ok_or_else(|| format!("enum index {index} outside 0..{symbols}"))
    }

    fn union_index(&mut self, variants: usize) -> Result<usize, String> {
        let index = self.long()?;
        usize::try_from(index)
            .ok()
            .filter(|i| *i < variants)
            .ok_or_else(|| format!("union branch {index} outside 0..{variants}"))
    }

    /// The item count of the next array or map block (0 ends the sequence). A negative
    /// count is followed by the block's byte size, which is skipped. Every item takes at
    /// least `min_item_bytes`, so a count larger than what is left is malformed.
    fn block(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let count = self.long()?;
        let count = if count < 0 {
            self.long()?;
            count
                .checked_neg()
                .ok_or_else(|| format!("block count {count}"))?
        } else {
            count
        };
        usize::try_from(count)
            .ok()
            .filter(|n| n.saturating_mul(min_item_bytes) <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "block of {count} items with {} bytes left",
                    self.bytes.len()
                )
            })
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("boolean byte {b}")),
        }
    }

    fn double(&mut self) -> Result<f64, String> {
        let bytes = self.take(8)?;
        Ok(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// An array of strings.
    fn strings(&mut self) -> Result<Vec<String>, String> {
        let mut items = Vec::new();
        loop {
            let n = self.block(1)?;
            if n == 0 {
                return Ok(items);
            }
            items.reserve_exact(n);
            for _ in 0..n {
                items.push(self.string()?);
            }
        }
    }

    /// An array of floats: one allocation of the first block's size (a vector is
    /// written as one block), filled from the little-endian bytes in one pass.
    fn floats(&mut self) -> Result<Vec<f32>, String> {
        let mut items = Vec::new();
        loop {
            let n = self.block(4)?;
            if n == 0 {
                return Ok(items);
            }
            let bytes = self.take(n * 4)?;
            items.reserve_exact(n);
            items.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            );
        }
    }

    /// The properties map; a key written twice keeps its last value.
    fn properties(&mut self) -> Result<BTreeMap<String, PropertyValue>, String> {
        let mut map = BTreeMap::new();
        loop {
            let n = self.block(2)?;
            if n == 0 {
                return Ok(map);
            }
            for _ in 0..n {
                let name = self.string()?;
                let value = self.property(true)?;
                map.insert(name, value);
            }
        }
    }

    /// A property value: union of null, boolean, long, double, string and (at the top
    /// level only) an array of the scalar branches.
    fn property(&mut self, list_allowed: bool) -> Result<PropertyValue, String> {
        let branches = if list_allowed { 6 } else { 5 };
        Ok(match self.union_index(branches)? {
            0 => PropertyValue::Null,
            1 => PropertyValue::Bool(self.boolean()?),
            2 => PropertyValue::Long(self.long()?),
            3 => PropertyValue::Double(self.double()?),
            4 => PropertyValue::String(self.string()?),
            _ => {
                let mut items = Vec::new();
                loop {
                    let n = self.block(1)?;
                    if n == 0 {
                        break PropertyValue::List(items);
                    }
                    items.reserve_exact(n);
                    for _ in 0..n {
                        items.push(self.property(false)?);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
