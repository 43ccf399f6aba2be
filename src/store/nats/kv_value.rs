//! Values in Tern's KV buckets: one version byte, then the record in postcard.
//! A value of another version (or damaged) reads as None: the caller skips it.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) fn encode<T: Serialize>(version: u8, value: &T) -> Bytes {
    let mut out = vec![version];
    // Serialising plain records into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out.into()
}

pub(crate) fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&found, rest)) if found == version => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}
