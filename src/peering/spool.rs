//! The spool: a peer's dump on disk while a refresh runs.
//!
//! A refresh receives the whole dump before it opens its transaction (a
//! slow peer must never hold the database), but a large dump must not sit
//! in memory as messages either. So each object is encoded, as it
//! arrives, into its class's spool: a buffer in memory while the class
//! holds less than [`IN_MEMORY_BYTES`] (a small delta never touches the
//! disk), an unnamed temporary file in the data directory beyond (the file
//! has no name, so nothing is left behind, even by a crash). What else
//! stays in memory is compact: the peer's ids of each class, for the
//! mass-delete guard and for telling gone objects from present ones. The
//! apply phase then reads each class back in chunks.
//!
//! A delta holds the changed objects the same way, plus the ids the peer
//! deleted (and those that cleaning dropped, which a delta must remove
//! too): [`SpooledClass::gone_ids`].
//!
//! Records are a 4-byte little-endian length, the object's digest
//! ([`crate::peering::digest`], 4 bytes little-endian, taken from the
//! encoding as it is spooled, while the peer is still sending) and the
//! object's protobuf encoding.

use foldhash::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::class::Class;
use crate::error::{Error, Result};
use crate::peering::digest::Digested;
use crate::proto::v1 as pb;

/// An object of a peer's dump.
pub trait PeerObject: Digested + Default {
    /// The peer's id of the object.
    fn peer_object_id(&self) -> i64;
}

macro_rules! peer_object {
    ($($type:ident . $id:ident),* $(,)?) => {
        $(
            impl PeerObject for pb::$type {
                fn peer_object_id(&self) -> i64 {
                    self.$id
                }
            }
        )*
    };
}

peer_object!(
    ExportedSite.site_id,
    ExportedKey.key_id,
    ExportedPerson.person_id,
    ExportedNode.node_id,
    PeerNode.node_id,
    ExportedSlice.slice_id,
);

/// Encoded objects a class keeps in memory before it moves them to a file.
pub const IN_MEMORY_BYTES: usize = 256 * 1024;

/// Where a class's encoded objects are.
#[derive(Debug)]
enum Storage {
    /// In memory, while small.
    Memory(Vec<u8>),
    /// In an unnamed temporary file.
    File(BufWriter<File>),
}

/// The spooled objects of one class.
#[derive(Debug)]
pub struct ClassSpool<T> {
    storage: Storage,
    /// Where the file goes, once the objects outgrow memory.
    dir: PathBuf,
    /// The peer's ids of the spooled objects; sorted once sealed.
    ids: Vec<i64>,
    /// Objects received, including those cleaning dropped.
    received: usize,
    /// Bytes of the objects spooled: each one's length and encoding (the
    /// digest kept beside it is ours, not the peer's, and is not counted).
    bytes: u64,
    /// Ids the peer sent as deleted, and ids cleaning dropped; sorted once
    /// sealed.
    gone: Vec<i64>,
    _objects: PhantomData<T>,
}

impl<T: PeerObject> ClassSpool<T> {
    fn create(dir: &Path) -> Result<ClassSpool<T>> {
        Ok(ClassSpool {
            storage: Storage::Memory(Vec::new()),
            dir: dir.to_owned(),
            ids: Vec::new(),
            received: 0,
            bytes: 0,
            gone: Vec::new(),
            _objects: PhantomData,
        })
    }

    /// Appends objects, passing each through `keep` first (input cleaning:
    /// it may rewrite the object, or drop it by returning `false`).
    pub fn push(&mut self, objects: Vec<T>, mut keep: impl FnMut(&mut T) -> bool) -> Result<()> {
        let mut buffer = Vec::new();
        for mut object in objects {
            self.received += 1;
            if !keep(&mut object) {
                self.gone.push(object.peer_object_id());
                continue;
            }
            buffer.clear();
            object
                .encode(&mut buffer)
                .map_err(|e| Error::Internal(format!("spooling the peer's dump: {e}")))?;
            let length = u32::try_from(buffer.len())
                .map_err(|_| Error::Internal("an object of over 4 GiB in a dump".into()))?;
            // Digests are in 0..2^32.
            let digest = object.digest_of_encoding(&buffer) as u32;
            self.write(&length.to_le_bytes())?;
            self.write(&digest.to_le_bytes())?;
            self.write(&buffer)?;
            self.bytes += 4 + buffer.len() as u64;
            self.ids.push(object.peer_object_id());
        }
        Ok(())
    }

    /// Appends bytes, moving the spool to a file when memory would hold
    /// more than [`IN_MEMORY_BYTES`].
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let failed = |e: std::io::Error| Error::Internal(format!("spooling the peer's dump: {e}"));
        if let Storage::Memory(memory) = &mut self.storage {
            if memory.len() + bytes.len() <= IN_MEMORY_BYTES {
                memory.extend_from_slice(bytes);
                return Ok(());
            }
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| spool_error(&self.dir, &e))?;
            let mut file = BufWriter::new(file);
            file.write_all(memory).map_err(failed)?;
            self.storage = Storage::File(file);
        }
        match &mut self.storage {
            Storage::File(file) => file.write_all(bytes).map_err(failed),
            Storage::Memory(memory) => {
                memory.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn seal(&mut self) -> Result<()> {
        self.ids.sort_unstable();
        self.gone.sort_unstable();
        self.gone.dedup();
        match &mut self.storage {
            Storage::File(file) => file
                .flush()
                .map_err(|e| Error::Internal(format!("spooling the peer's dump: {e}"))),
            Storage::Memory(_) => Ok(()),
        }
    }

    /// Reads the objects back, in the order they arrived, in chunks of at
    /// most `size`.
    pub fn chunks(&mut self, size: usize) -> Result<Chunks<'_, T>> {
        let reader: Box<dyn Read + Send + '_> = match &mut self.storage {
            Storage::Memory(memory) => Box::new(memory.as_slice()),
            Storage::File(file) => {
                let file = file.get_mut();
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::Internal(format!("reading the spooled dump: {e}")))?;
                Box::new(BufReader::with_capacity(256 * 1024, file))
            }
        };
        Ok(Chunks {
            reader,
            size,
            left: self.ids.len(),
            buffer: Vec::new(),
            _objects: PhantomData,
        })
    }

    /// Runs `f` on every object, in the order they arrived.
    pub fn for_each(&mut self, mut f: impl FnMut(T)) -> Result<()> {
        for chunk in self.chunks(CHUNK)? {
            chunk?.into_iter().for_each(&mut f);
        }
        Ok(())
    }
}

/// What a spool knows of one class's objects without reading them back,
/// the same for every class: [`Spool::class`] reaches any of them by its
/// [`Class`]. The ids are sorted once the spool is sealed.
pub trait SpooledClass {
    /// Objects received, including those cleaning dropped.
    fn received(&self) -> usize;

    /// Encoded bytes spooled.
    fn bytes(&self) -> u64;

    /// The peer's ids of the spooled objects.
    fn ids(&self) -> &[i64];

    /// The ids the peer sent as deleted, and those of the objects cleaning
    /// dropped.
    fn gone_ids(&self) -> &[i64];

    /// Objects spooled.
    fn len(&self) -> usize {
        self.ids().len()
    }

    /// Whether nothing was spooled.
    fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    /// Whether the peer sent an object with this id.
    fn contains(&self, peer_object_id: i64) -> bool {
        self.ids().binary_search(&peer_object_id).is_ok()
    }

    /// Whether the peer sent this id as deleted, or cleaning dropped its
    /// object.
    fn is_gone(&self, peer_object_id: i64) -> bool {
        self.gone_ids().binary_search(&peer_object_id).is_ok()
    }

    /// The peer's ids, among the `cached` ones (peer's id → local id),
    /// whose objects the refresh deletes, sorted: for a full dump those it
    /// does not hold; for a delta those sent as deleted, or dropped by
    /// cleaning, and not also sent as objects.
    fn doomed(&self, cached: &HashMap<i64, i64>, delta: bool) -> Vec<i64> {
        if delta {
            let mut doomed: Vec<i64> = self
                .gone_ids()
                .iter()
                .filter(|id| cached.contains_key(id) && !self.contains(**id))
                .copied()
                .collect();
            doomed.sort_unstable();
            return doomed;
        }
        // The whole cache against the whole dump: both sorted, then merged
        // (a search per cached id would cost more than the sort).
        let mut doomed: Vec<i64> = cached.keys().copied().collect();
        doomed.sort_unstable();
        let (sent, mut at) = (self.ids(), 0);
        doomed.retain(|id| {
            while sent.get(at).is_some_and(|s| s < id) {
                at += 1;
            }
            sent.get(at) != Some(id)
        });
        doomed
    }
}

impl<T: PeerObject> SpooledClass for ClassSpool<T> {
    fn received(&self) -> usize {
        self.received
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn ids(&self) -> &[i64] {
        &self.ids
    }

    fn gone_ids(&self) -> &[i64] {
        &self.gone
    }
}

/// Objects read back per chunk by [`ClassSpool::for_each`].
const CHUNK: usize = 4096;

/// Reads a [`ClassSpool`] back, chunk by chunk.
pub struct Chunks<'a, T> {
    reader: Box<dyn Read + Send + 'a>,
    size: usize,
    left: usize,
    buffer: Vec<u8>,
    _objects: PhantomData<T>,
}

impl<'a, T: PeerObject> Chunks<'a, T> {
    /// The same chunks, each object with its digest.
    pub fn with_digests(self) -> DigestedChunks<'a, T> {
        DigestedChunks(self)
    }

    fn next_object(&mut self) -> std::io::Result<(T, i64)> {
        let mut head = [0u8; 8];
        self.reader.read_exact(&mut head)?;
        let [l0, l1, l2, l3, d0, d1, d2, d3] = head;
        self.buffer
            .resize(u32::from_le_bytes([l0, l1, l2, l3]) as usize, 0);
        self.reader.read_exact(&mut self.buffer)?;
        let object = T::decode(self.buffer.as_slice())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok((object, i64::from(u32::from_le_bytes([d0, d1, d2, d3]))))
    }

    /// The next chunk of objects with their digests.
    fn next_chunk(&mut self) -> Option<Result<Vec<(T, i64)>>> {
        if self.left == 0 {
            return None;
        }
        let take = self.left.min(self.size);
        self.left -= take;
        let chunk = (0..take)
            .map(|_| self.next_object())
            .collect::<std::io::Result<Vec<(T, i64)>>>()
            .map_err(|e| Error::Internal(format!("reading the spooled dump: {e}")));
        if chunk.is_err() {
            self.left = 0;
        }
        Some(chunk)
    }
}

impl<T: PeerObject> Iterator for Chunks<'_, T> {
    type Item = Result<Vec<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().map(|chunk| {
            chunk.map(|objects| objects.into_iter().map(|(object, _)| object).collect())
        })
    }
}

/// Reads a [`ClassSpool`] back, chunk by chunk, each object with the
/// digest taken as it was spooled.
pub struct DigestedChunks<'a, T>(Chunks<'a, T>);

impl<T: PeerObject> Iterator for DigestedChunks<'_, T> {
    type Item = Result<Vec<(T, i64)>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_chunk()
    }
}

/// The most a spooled dump may hold; past either bound the refresh fails
/// (and its spool is dropped: its files have no name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpLimits {
    /// Objects and deleted ids, all classes together.
    pub max_objects: usize,
    /// Encoded bytes, all classes together.
    pub max_bytes: u64,
}

impl Default for DumpLimits {
    /// Ten times the largest federation measured (100 times the
    /// reference's largest data set: about a million objects, 0.4 GB).
    fn default() -> DumpLimits {
        DumpLimits {
            max_objects: 10_000_000,
            max_bytes: 4 << 30,
        }
    }
}

/// A peer's dump or delta, spooled.
#[derive(Debug)]
pub struct Spool {
    /// The peer's name for itself.
    pub registry_name: String,
    /// The peer's dump layout version.
    pub schema_version: i32,
    /// Everything, or the changes since the checkpoint sent.
    pub kind: pb::SnapshotKind,
    /// Why the peer sent everything when changes were asked for.
    pub full_reason: String,
    /// The checkpoint the stream brings the cache to; `None` from a peer
    /// that does not number its changes.
    pub checkpoint: Option<pb::Checkpoint>,
    /// Deleted ids received, all classes together.
    pub deleted: usize,
    /// Keys of the persons cleaning dropped: they go with their persons.
    pub dropped_person_keys: Vec<i64>,
    /// The most the spool may hold.
    limits: DumpLimits,
    /// Seconds the peer spent reading its database.
    pub peer_db_seconds: f64,
    /// Sites.
    pub sites: ClassSpool<pb::ExportedSite>,
    /// Keys.
    pub keys: ClassSpool<pb::ExportedKey>,
    /// Persons.
    pub persons: ClassSpool<pb::ExportedPerson>,
    /// Nodes.
    pub nodes: ClassSpool<pb::ExportedNode>,
    /// Our own nodes as the peer caches them.
    pub peer_nodes: ClassSpool<pb::PeerNode>,
    /// Slices.
    pub slices: ClassSpool<pb::ExportedSlice>,
}

impl Spool {
    /// An empty spool whose files go in `dir`, holding at most `limits`.
    pub fn create(dir: &Path, limits: DumpLimits) -> Result<Spool> {
        Ok(Spool {
            registry_name: String::new(),
            schema_version: 0,
            kind: pb::SnapshotKind::Unspecified,
            full_reason: String::new(),
            checkpoint: None,
            deleted: 0,
            dropped_person_keys: Vec::new(),
            limits,
            peer_db_seconds: 0.0,
            sites: ClassSpool::create(dir)?,
            keys: ClassSpool::create(dir)?,
            persons: ClassSpool::create(dir)?,
            nodes: ClassSpool::create(dir)?,
            peer_nodes: ClassSpool::create(dir)?,
            slices: ClassSpool::create(dir)?,
        })
    }

    /// Spools one batch of the stream, cleaning it on the way
    /// ([`super::diff::keep_person`], [`super::diff::clean_node`]).
    pub fn push(&mut self, batch: pb::PeerDataBatch) -> Result<()> {
        self.sites.push(batch.sites, |_| true)?;
        self.keys.push(batch.keys, |_| true)?;
        let dropped_keys = &mut self.dropped_person_keys;
        self.persons.push(batch.persons, |person| {
            let keep = super::diff::keep_person(person);
            if !keep {
                dropped_keys.extend(&person.key_ids);
            }
            keep
        })?;
        self.nodes.push(batch.nodes, |node| {
            super::diff::clean_node(node);
            true
        })?;
        self.peer_nodes.push(batch.peer_nodes, |_| true)?;
        self.slices.push(batch.slices, |_| true)?;
        if let Some(mut deleted) = batch.deleted {
            for class in Class::ALL {
                let ids = std::mem::take(deleted.ids_mut(class));
                self.deleted += ids.len();
                self.gone_mut(class).extend(ids);
            }
        }
        self.check_limits()
    }

    /// The spool of `class`.
    pub fn class(&self, class: Class) -> &dyn SpooledClass {
        match class {
            Class::Sites => &self.sites,
            Class::Keys => &self.keys,
            Class::Persons => &self.persons,
            Class::Nodes => &self.nodes,
            Class::Slices => &self.slices,
        }
    }

    /// The ids gone of `class`.
    fn gone_mut(&mut self, class: Class) -> &mut Vec<i64> {
        match class {
            Class::Sites => &mut self.sites.gone,
            Class::Keys => &mut self.keys.gone,
            Class::Persons => &mut self.persons.gone,
            Class::Nodes => &mut self.nodes.gone,
            Class::Slices => &mut self.slices.gone,
        }
    }

    /// Every class's spool and the peer's own nodes'.
    fn all(&self) -> impl Iterator<Item = &dyn SpooledClass> {
        let peer_nodes: &dyn SpooledClass = &self.peer_nodes;
        Class::ALL
            .into_iter()
            .map(|class| self.class(class))
            .chain(std::iter::once(peer_nodes))
    }

    /// Encoded bytes of the objects spooled.
    pub fn bytes(&self) -> u64 {
        self.all().map(|c| c.bytes()).sum()
    }

    /// Fails once the spool holds more than its limits allow.
    fn check_limits(&self) -> Result<()> {
        let objects = self.all().map(|c| c.received()).sum::<usize>() + self.deleted;
        let bytes = self.bytes();
        let DumpLimits {
            max_objects,
            max_bytes,
        } = self.limits;
        if objects > max_objects {
            return Err(Error::ResourceExhausted(format!(
                "the peer's data holds more than {max_objects} objects (--max-dump-objects); nothing was applied"
            )));
        }
        if bytes > max_bytes {
            return Err(Error::ResourceExhausted(format!(
                "the peer's data is larger than {max_bytes} bytes (--max-dump-bytes); nothing was applied"
            )));
        }
        Ok(())
    }

    /// Whether this is a delta.
    pub fn is_delta(&self) -> bool {
        self.kind == pb::SnapshotKind::Delta
    }

    /// Whether this is a delta with nothing in it.
    pub fn is_empty_delta(&self) -> bool {
        self.is_delta()
            && Class::ALL.iter().all(|&c| self.class(c).received() == 0)
            && self.deleted == 0
    }

    /// Checks the trailer's counts against what arrived.
    pub fn check_trailer(&self, trailer: &pb::PeerDataTrailer) -> std::result::Result<(), String> {
        let counts = [
            ("sites", self.sites.received(), trailer.sites),
            ("keys", self.keys.received(), trailer.keys),
            ("persons", self.persons.received(), trailer.persons),
            ("nodes", self.nodes.received(), trailer.nodes),
            ("peer_nodes", self.peer_nodes.received(), trailer.peer_nodes),
            ("slices", self.slices.received(), trailer.slices),
            ("deleted ids", self.deleted, trailer.deleted),
        ];
        for (class, received, announced) in counts {
            if received as i64 != announced {
                return Err(format!(
                    "the trailer announces {announced} {class} but {received} arrived"
                ));
            }
        }
        if trailer.checkpoint != self.checkpoint {
            return Err(format!(
                "the trailer's checkpoint {:?} differs from the header's {:?}",
                trailer.checkpoint, self.checkpoint
            ));
        }
        Ok(())
    }

    /// Readies the spool for reading once the stream is whole.
    pub fn seal(&mut self, trailer: &pb::PeerDataTrailer) -> Result<()> {
        self.peer_db_seconds = trailer.db_seconds;
        self.sites.seal()?;
        self.keys.seal()?;
        self.persons.seal()?;
        self.nodes.seal()?;
        self.peer_nodes.seal()?;
        self.slices.seal()
    }
}

fn spool_error(dir: &Path, e: &std::io::Error) -> Error {
    Error::Internal(format!(
        "cannot create a spool file for the peer's dump in {}: {e}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_back_in_order_in_chunks_and_cleaning_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ClassSpool::<pb::ExportedPerson>::create(dir.path()).unwrap();
        let persons = |ids: std::ops::Range<i64>| {
            ids.map(|id| pb::ExportedPerson {
                person_id: id,
                email: format!("p{id}@example.org"),
                enabled: id % 10 != 0,
                // Some lists out of order: digested sorted all the same.
                key_ids: vec![id % 3, 1],
                ..Default::default()
            })
            .collect::<Vec<_>>()
        };
        spool.push(persons(20..30), |p| p.enabled).unwrap();
        spool.push(persons(1..20), |p| p.enabled).unwrap();
        spool.seal().unwrap();
        assert_eq!((spool.received(), spool.len()), (29, 27));
        assert!(spool.contains(1) && spool.contains(29) && !spool.contains(10));

        let chunks: Vec<Vec<pb::ExportedPerson>> =
            spool.chunks(10).unwrap().map(|c| c.unwrap()).collect();
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 7]);
        let ids: Vec<i64> = chunks.iter().flatten().map(|p| p.person_id).collect();
        let expected: Vec<i64> = (21..30).chain(1..20).filter(|id| id % 10 != 0).collect();
        assert_eq!(ids, expected);
        assert_eq!(chunks[0][0].email, "p21@example.org");

        // Each object comes with its digest, taken as it was spooled.
        let digested: Vec<(pb::ExportedPerson, i64)> = spool
            .chunks(10)
            .unwrap()
            .with_digests()
            .flat_map(|c| c.unwrap())
            .collect();
        assert_eq!(digested.len(), 27);
        assert!(digested.iter().all(|(p, digest)| *digest == p.digest()));

        // A second read starts from the beginning again.
        let mut again = 0;
        spool.for_each(|_| again += 1).unwrap();
        assert_eq!(again, 27);
        assert!(
            matches!(spool.storage, Storage::Memory(_)),
            "small: in memory"
        );
    }

    #[test]
    fn a_full_dump_dooms_the_cached_ids_it_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ClassSpool::<pb::ExportedKey>::create(dir.path()).unwrap();
        let keys = |ids: &[i64]| {
            ids.iter()
                .map(|&key_id| pb::ExportedKey {
                    key_id,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        // Sent out of order, one id twice, one dropped by cleaning.
        spool
            .push(keys(&[9, 4, 7, 4, 12]), |k| k.key_id != 12)
            .unwrap();
        spool.seal().unwrap();
        let cached: HashMap<i64, i64> = [1, 4, 5, 7, 9, 12, 40]
            .into_iter()
            .map(|id| (id, id + 100))
            .collect();
        assert_eq!(spool.doomed(&cached, false), [1, 5, 12, 40]);
        // A delta dooms only what it sent as gone (or cleaning dropped).
        assert_eq!(spool.doomed(&cached, true), [12]);
        let nothing_cached = HashMap::default();
        assert!(spool.doomed(&nothing_cached, false).is_empty());
    }

    #[test]
    fn a_class_that_outgrows_memory_moves_to_a_file_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = ClassSpool::<pb::ExportedSite>::create(dir.path()).unwrap();
        let sites: Vec<pb::ExportedSite> = (1..=5000)
            .map(|id| pb::ExportedSite {
                site_id: id,
                login_base: format!("site{id}"),
                name: "x".repeat(100),
                ..Default::default()
            })
            .collect();
        spool.push(sites, |_| true).unwrap();
        spool.seal().unwrap();
        assert!(matches!(spool.storage, Storage::File(_)), "large: on disk");
        let ids: Vec<i64> = spool
            .chunks(1000)
            .unwrap()
            .flat_map(|c| c.unwrap())
            .map(|s| s.site_id)
            .collect();
        assert_eq!(ids, (1..=5000).collect::<Vec<i64>>());
    }
}
