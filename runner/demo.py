"""Loads sql/demo/demo_data.sql once into a migrated database."""
from runner import SQL_DIR
from runner.db import connect

DEMO_SQL = SQL_DIR / "demo" / "demo_data.sql"


def load(url: str) -> bool:
    """Load the demo data unless it is already there; True when loaded now."""
    with connect(url) as conn:
        if conn.execute("select exists (select from auth.users where email like '%@demo.smsao.ao')").fetchone()[0]:
            return False
        conn.execute(DEMO_SQL.read_text())
        conn.commit()
    return True
