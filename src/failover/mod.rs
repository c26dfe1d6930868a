//! Internet failover: a default route via a mesh gateway in meshnode's own routing table.
