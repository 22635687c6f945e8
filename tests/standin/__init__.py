"""A local stand-in for the legacy network: a legacy SU and an Arweave gateway served on loopback by the tests,
speaking the routes and response shapes of docs/ABI.md (SU API consumed by the CU, and checkpoints) (see world.py for the process it holds and
server.py for the HTTP side, including outage injection)."""
