"""The SQLite backend (aiosqlite, WAL), the embedded default: `store.SqliteStore`, `db.Database`.

Kept free of imports so `store/sql/migrations.py` can import the schema modules here.
"""
