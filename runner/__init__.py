"""SMS AO production database: the `smsao-db` runner and helpers for apps."""
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_DIR / "sql"
