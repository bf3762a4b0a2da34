//! Digests of exported objects, for verifying a cache against its peer.
//!
//! An object's digest is the first 32 bits of the SHA-256 of its message
//! as a peer receives it (protobuf encoding, which writes fields in tag
//! order), its lists of ids sorted first so that their order does not
//! count. A slice's node list leaves out the caller's own nodes, which
//! differ per caller. Digests are 32-bit so that the sum of a range's
//! digests fits a 64-bit integer in SQL on both backends; a range is
//! compared by its number of objects and that sum.
//!
//! Both ends compute digests with [`Digested::digest`]: the serving
//! registry of what it exports ([`crate::store::digests`] keeps them), the
//! refreshing one of what it received, stored with each cached row.

use foldhash::HashSet;
use std::cell::RefCell;

use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::proto::v1 as pb;

/// The digest algorithm's number, sent in `GetDigestResponse`: two
/// registries compare digests only when they compute them alike.
pub const ALGORITHM: u32 = 1;

/// A peer object that has a digest.
pub trait Digested: Message + Clone + Sized {
    /// Whether the object is in its canonical form already (its lists
    /// sorted, as a registry sends them), so that it is digested as it is.
    fn is_canonical(&self) -> bool {
        true
    }

    /// Puts the object in its canonical form: lists sorted.
    fn normalize(&mut self) {}

    /// The object's digest, in `0..2^32`.
    fn digest(&self) -> i64 {
        if self.is_canonical() {
            return of_message(self);
        }
        let mut canonical = self.clone();
        canonical.normalize();
        of_message(&canonical)
    }

    /// The object's digest, given its encoding (`encoded`, as
    /// [`Message::encode`] writes it): a canonical object is not encoded
    /// again.
    fn digest_of_encoding(&self, encoded: &[u8]) -> i64 {
        match self.is_canonical() {
            true => of_bytes(encoded),
            false => self.digest(),
        }
    }
}

thread_local! {
    /// The encoding buffer of [`of_message`], reused by each thread.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The digest of a message's encoding.
fn of_message(message: &impl Message) -> i64 {
    ENCODED.with_borrow_mut(|buffer| {
        buffer.clear();
        // A Vec grows as needed: encoding into one cannot fail.
        let _ = message.encode(buffer);
        of_bytes(buffer)
    })
}

/// The digest of an encoding.
fn of_bytes(encoded: &[u8]) -> i64 {
    let hash = Sha256::digest(encoded);
    i64::from(u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]))
}

impl Digested for pb::ExportedSite {}
impl Digested for pb::ExportedKey {}
impl Digested for pb::ExportedNode {}
impl Digested for pb::PeerNode {}

impl Digested for pb::ExportedPerson {
    fn is_canonical(&self) -> bool {
        self.key_ids.is_sorted() && self.role_ids.is_sorted() && self.site_ids.is_sorted()
    }

    fn normalize(&mut self) {
        self.key_ids.sort_unstable();
        self.role_ids.sort_unstable();
        self.site_ids.sort_unstable();
    }
}

impl Digested for pb::ExportedSlice {
    fn is_canonical(&self) -> bool {
        self.node_ids.is_sorted() && self.person_ids.is_sorted()
    }

    fn normalize(&mut self) {
        self.node_ids.sort_unstable();
        self.person_ids.sort_unstable();
    }
}

/// The digest of a slice a peer sent, leaving out of its nodes those that
/// are the receiver's own (`own_nodes`, the peer's ids of them): the
/// serving registry digests its slices without any caller's nodes.
/// `digest` is the slice's digest as it came, all its nodes included.
pub fn of_received_slice(slice: &pb::ExportedSlice, digest: i64, own_nodes: &HashSet<i64>) -> i64 {
    if own_nodes.is_empty() || !slice.node_ids.iter().any(|id| own_nodes.contains(id)) {
        return digest;
    }
    let mut kept = slice.clone();
    kept.node_ids.retain(|id| !own_nodes.contains(id));
    kept.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_list_order_and_see_every_field() {
        let slice = pb::ExportedSlice {
            slice_id: 7,
            name: "site_one".into(),
            node_ids: vec![3, 1, 2],
            person_ids: vec![9, 8],
            ..Default::default()
        };
        let reordered = pb::ExportedSlice {
            node_ids: vec![1, 2, 3],
            person_ids: vec![8, 9],
            ..slice.clone()
        };
        assert_eq!(slice.digest(), reordered.digest());
        let renamed = pb::ExportedSlice {
            name: "site_two".into(),
            ..slice.clone()
        };
        assert_ne!(slice.digest(), renamed.digest());
        let fewer = pb::ExportedSlice {
            node_ids: vec![1, 2],
            ..slice.clone()
        };
        assert_ne!(slice.digest(), fewer.digest());
        assert!((0..1 << 32).contains(&slice.digest()));
    }

    #[test]
    fn a_digest_is_the_first_32_bits_of_the_sha256_of_the_sorted_encoding() {
        let person = pb::ExportedPerson {
            person_id: 3,
            email: "ada@example.org".into(),
            key_ids: vec![5, 2],
            site_ids: vec![1],
            ..Default::default()
        };
        let sorted = pb::ExportedPerson {
            key_ids: vec![2, 5],
            ..person.clone()
        };
        let hash = Sha256::digest(sorted.encode_to_vec());
        let expected = i64::from(u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]));
        assert_eq!(person.digest(), expected);
        assert_eq!(sorted.digest(), expected);
    }

    #[test]
    fn a_received_slice_is_digested_without_the_receivers_nodes() {
        let served = pb::ExportedSlice {
            slice_id: 7,
            node_ids: vec![1, 2],
            ..Default::default()
        };
        let received = pb::ExportedSlice {
            node_ids: vec![2, 40, 1],
            ..served.clone()
        };
        let own = HashSet::from_iter([40]);
        let as_sent = received.digest();
        assert_eq!(of_received_slice(&received, as_sent, &own), served.digest());
        assert_ne!(
            of_received_slice(&received, as_sent, &HashSet::default()),
            served.digest()
        );
    }
}
