"""SMS AO production database: the `smsao-db` runner and helpers for apps.

The SQL and the migrations ship inside the package: see runner.resources."""
