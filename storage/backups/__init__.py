"""Backups of a node: an online snapshot of the index, node.yaml and every image file that snapshot lists.

`layout.py` names the files of one backup and reads and writes its manifest; `take.py` takes a backup into a
`dir` target (hard links to the previous backup for unchanged files), `restic.py` into a restic repository;
`verify.py` re-reads a backup against its manifest; `restore.py` rebuilds a node folder from one; `retention.py`
chooses what a target keeps; `runner.py` runs them as `backup` jobs under a per-target lock; `catalog.py` lists
the backups of every target. Imports config, index and pools; nothing in storage below imports it.
"""
