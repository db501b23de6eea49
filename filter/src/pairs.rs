//! The proxy-wasm pairs encoding, read in place.
//!
//! `u32 count`, then `count` × (`u32 key_len`, `u32 value_len`), then each key
//! and value followed by a NUL; all integers little-endian. [`Pairs::parse`]
//! checks the whole buffer once; iteration after that borrows from it and
//! allocates nothing.

/// A checked pairs buffer.
#[derive(Debug, Clone, Copy)]
pub struct Pairs<'a> {
    count: usize,
    buf: &'a [u8],
}

fn u32_at(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = b.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(arr)).ok()
}

impl<'a> Pairs<'a> {
    /// Checks the encoding. An empty buffer is an empty map.
    pub fn parse(buf: &'a [u8]) -> Option<Self> {
        if buf.is_empty() {
            return Some(Pairs { count: 0, buf });
        }
        let count = u32_at(buf, 0)?;
        let pairs = Pairs { count, buf };
        pairs.data_start()?;
        let mut iter = pairs.iter();
        let seen = iter.by_ref().count();
        (!iter.failed && seen == count).then_some(pairs)
    }

    fn data_start(&self) -> Option<usize> {
        self.count.checked_mul(8)?.checked_add(4)
    }

    pub fn iter(&self) -> PairsIter<'a> {
        PairsIter {
            buf: self.buf,
            index: 0,
            count: self.count,
            offset: self.data_start().unwrap_or(usize::MAX),
            failed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Copies of a header by name, compared ignoring ASCII case.
    pub fn values<'n>(&self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

pub struct PairsIter<'a> {
    buf: &'a [u8],
    index: usize,
    count: usize,
    offset: usize,
    failed: bool,
}

impl<'a> PairsIter<'a> {
    fn step(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let sizes = 4usize.checked_add(self.index.checked_mul(8)?)?;
        let klen = u32_at(self.buf, sizes)?;
        let vlen = u32_at(self.buf, sizes.checked_add(4)?)?;
        let k_end = self.offset.checked_add(klen)?;
        let key = self.buf.get(self.offset..k_end)?;
        let v_start = k_end.checked_add(1)?;
        let v_end = v_start.checked_add(vlen)?;
        let value = self.buf.get(v_start..v_end)?;
        // Each string is followed by a NUL.
        if self.buf.get(k_end) != Some(&0) || self.buf.get(v_end) != Some(&0) {
            return None;
        }
        self.offset = v_end.checked_add(1)?;
        Some((key, value))
    }
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        match self.step() {
            Some(pair) => {
                self.index += 1;
                Some(pair)
            }
            None => {
                self.failed = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (k, v) in pairs {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_what_it_checked() {
        let buf = encode(&[(b":path", b"/a"), (b"X-A", b"1"), (b"x-a", b"\xff")]);
        let p = Pairs::parse(&buf).unwrap();
        assert_eq!(p.len(), 3);
        let v: Vec<_> = p.values(b"x-a").collect();
        assert_eq!(v, [&b"1"[..], &b"\xff"[..]]);
        assert!(Pairs::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn refuses_every_truncation() {
        let buf = encode(&[(b"a", b"bc"), (b"d", b"")]);
        for n in 1..buf.len() {
            assert!(Pairs::parse(&buf[..n]).is_none(), "{n}");
        }
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(Pairs::parse(&bad).is_none());
        let mut bad = buf;
        bad[4] = 0xff;
        assert!(Pairs::parse(&bad).is_none());
    }
}
