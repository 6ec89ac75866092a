"""The admin web dashboard (`smsao-db serve`): the Starlette app, /api/health and Prometheus
/metrics (app.py), its page templates (templates/) and the files the pages load (static/).
The Business page is analytics' own (runner/analytics/web.py): app.py mounts its routes."""
