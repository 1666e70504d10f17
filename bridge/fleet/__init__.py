"""Fleets: several gateways on one store share the assets (leases, rendezvous hashing,
fencing tokens) and take over a dead gateway's assets (``bridge.fleet.leases``)."""
