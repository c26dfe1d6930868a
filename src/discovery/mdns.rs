//! mDNS announce and browse (being written).
