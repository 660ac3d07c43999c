"""Patrons and items as the ILS last showed them: a snapshot each desk can read while the ILS is away.

rows.py reads the ILS's answers into the desk's own rows (pure, never raising on odd values), store.py keeps a
snapshot in SQLite with a name index and switches versions atomically, refresh.py pulls one from the ILS.
"""
