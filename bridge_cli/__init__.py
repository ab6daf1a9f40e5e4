"""bridge: move data from Databricks into SQL Server through an event table."""

__version__ = "0.1.0"
