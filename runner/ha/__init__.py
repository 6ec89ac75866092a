"""High availability: a local pg_auto_failover formation (`smsao-db up --ha`), its status,
and the failover drill. Production formations are built on separate machines with
pg_auto_failover's own commands (docs/ha.md); the runner then only needs their URL."""
