"""The pacsdeck agent: one JSON-RPC surface per node (params and results declared), roles, an audit log; no SQL."""
