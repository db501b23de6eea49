//! The proxy-wasm pairs encoding, as the host writes and reads it.

/// Encodes `(key, value)` pairs: `u32 count`, the sizes, then each key and
/// value followed by a NUL (all integers little-endian).
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Decodes what [`encode`] writes; `None` when the bytes are malformed.
pub fn decode(buf: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut offset = count.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::new();
    for i in 0..count {
        let klen = word(4 + i * 8)?;
        let vlen = word(8 + i * 8)?;
        let key = buf.get(offset..offset.checked_add(klen)?)?.to_vec();
        offset += klen + 1;
        let value = buf.get(offset..offset.checked_add(vlen)?)?.to_vec();
        offset += vlen + 1;
        out.push((key, value));
    }
    (offset <= buf.len()).then_some(out)
}
