"""The SQLite index: schema and upgrades, C-FIND matching, jobs and the queue, routes, accounts.

Owns: `database.py` (Index: connections, transactions, instance rows), `schema.py` (tables,
triggers, views and the upgrade steps), `query.py` and `dicomtime.py` (C-FIND matching of names,
dates and times), `jobs.py` and `queue.py` (persistent jobs: forwards, migrations, backups),
`routes.py`, `accounts.py` (users, their SSH keys, the audit log). Every SQL statement of the product lives
here (the agent calls these functions).
May import: storage.config, storage.metrics, storage.status, storage.uids.
"""
