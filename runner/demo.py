"""`smsao-db up --demo`: the demo data of sql/demo/, loaded once into a migrated database."""
from runner.db import connect
from runner.resources import SQL_DIR

DEMO_DIR = SQL_DIR / "demo"


def load(url: str) -> bool:
    """Load the demo users and their data unless present, then the monitoring history
    (itself idempotent); True when the users were loaded now."""
    with connect(url) as conn:
        present = conn.execute(
            "select exists (select from auth.users where email like '%@demo.smsao.ao')").fetchone()[0]
        if not present:
            conn.execute((DEMO_DIR / "demo_data.sql").read_text())
        conn.execute((DEMO_DIR / "history.sql").read_text())
        # 18 months of business history (issue 18), once.
        if not conn.execute("select exists (select from public.acquisition_spend)").fetchone()[0]:
            conn.execute((DEMO_DIR / "analytics.sql").read_text())
        conn.commit()
    return not present
