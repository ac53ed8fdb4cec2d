"""Where instances live on disk: placement across tiers, durable writes, migration, recovery.

Owns: `pool.py` (one pool folder: durable writes, fsync), `placement.py` (the first pool with
room), `stats.py` (space per pool and tier, as pools.list reports it), `ingest.py` and
`committer.py` (a received instance made durable and indexed; group commit), migration in four
parts: `migration.py` (the lock, `migrate()` and recall), `plan.py` (what moves and why, the
report), `mover.py` (copy, verify, commit, delete) and `verify.py` (checksums against the index),
`scheduler.py`, `recovery.py` (startup sweep and reindex), `context.py` (what migration needs of
the node, as a Protocol).
May import: storage.index, storage.config and the leaves; never storage.dimse or storage.node.
"""
