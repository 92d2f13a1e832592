"""No-torch half of resdyn: the run store, DuckDB queries, live math and figure builders."""
