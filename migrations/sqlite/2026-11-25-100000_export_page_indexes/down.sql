DROP INDEX slices_peer_order;
DROP INDEX nodes_peer_order;
DROP INDEX keys_peer_order;
DROP INDEX persons_peer_order;
DROP INDEX sites_peer_order;
