"""Reports: plots (matplotlib, Agg) of path tables, surfaces and landscapes."""
