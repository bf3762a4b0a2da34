-- GetPeerData pages through local rows by id (`peer_id IS NULL AND <id> >
-- last ORDER BY <id> LIMIT n`), and so does PeerNodes through a peer's
-- nodes. With only the (peer_id, peer_<kind>_id) unique index, a page may
-- read every local row of the table and sort them (SQLite's plan: "USE TEMP
-- B-TREE FOR ORDER BY"), quadratic in the registry's size; with these, a
-- page is one index range.
CREATE INDEX sites_peer_order ON sites (peer_id, site_id);
CREATE INDEX persons_peer_order ON persons (peer_id, person_id);
CREATE INDEX keys_peer_order ON keys (peer_id, key_id);
CREATE INDEX nodes_peer_order ON nodes (peer_id, node_id);
CREATE INDEX slices_peer_order ON slices (peer_id, slice_id);
