//! A list that grows in fixed-size chunks and never moves what it holds.
//!
//! The trie keeps one node per topic level, so a broker with a device per
//! topic holds as many nodes as connections. A `Vec` that doubles would copy
//! them at every growth and hand the outgrown copies back to the allocator,
//! which keeps them resident for a while, and up to half its capacity would
//! sit unused: together about a node and a half more per node. Chunks cost
//! neither.

/// Items per chunk: a power of two, so an index splits with a shift and a mask.
const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    /// Every chunk but the last is full; each was allocated with room for `CHUNK`.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedVec<T> {
    /// Appends `item`; returns its index.
    pub(crate) fn push(&mut self, item: T) -> usize {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        self.len - 1
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks
            .get(index >> CHUNK_BITS)?
            .get(index & (CHUNK - 1))
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks
            .get_mut(index >> CHUNK_BITS)?
            .get_mut(index & (CHUNK - 1))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_index_and_address_as_it_grows() {
        let mut list = ChunkedVec::default();
        let first = list.push(7u64);
        let address = list.get(first).map(|x| x as *const u64);
        for i in 1..(3 * CHUNK as u64 + 5) {
            assert_eq!(list.push(i), i as usize);
        }
        assert_eq!(list.len(), 3 * CHUNK + 5);
        assert_eq!(
            list.get(first).map(|x| x as *const u64),
            address,
            "never moved"
        );
        assert_eq!(list.get(CHUNK), Some(&(CHUNK as u64)));
        assert_eq!(list.get(3 * CHUNK + 4), Some(&(3 * CHUNK as u64 + 4)));
        assert_eq!(list.get(3 * CHUNK + 5), None);
        if let Some(x) = list.get_mut(CHUNK + 1) {
            *x = 0;
        }
        assert_eq!(list.get(CHUNK + 1), Some(&0));
        assert!(list.chunks.iter().all(|c| c.capacity() == CHUNK));
    }
}
