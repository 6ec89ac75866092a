"""Monitoring: the health check and its Nagios exit codes (health.py), the live terminal view
(monitor.py), and the stored snapshots, samples and alerts that the view and the web
dashboard read (store.py)."""
