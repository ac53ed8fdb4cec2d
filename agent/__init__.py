"""The pacsdeck agent: one JSON-RPC surface per node, with roles and an audit log."""
