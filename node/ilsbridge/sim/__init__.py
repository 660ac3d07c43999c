"""An embedded ILS that speaks what real ones speak, for the demo and the tests.

It runs as its own process (`python -m node.ilsbridge.sim`, or `circmesh ils-sim`) with its own SQLite
library, and answers Koha's offline-circulation service, a Koha-style REST subset and SIP2 over TCP. It can
be switched offline, slowed down and made to fail, and it keeps a ledger of every operation it processed so
that tests can prove that the bridge delivers each event exactly once.
"""
