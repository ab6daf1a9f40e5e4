"""The SQL Server target: one target, two drivers (pymssql, mssql-python) behind one small seam."""

from bridge_cli.targets.sqlserver.target import SQLServerSession, SQLServerTarget

__all__ = ["SQLServerSession", "SQLServerTarget"]
