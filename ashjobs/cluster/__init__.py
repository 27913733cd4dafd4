"""The distributed half: authenticated msgpack RPC, zeroconf discovery, routing, leases."""
