"""healthsync: customer health scores computed locally and written back to the CRM."""

__version__ = "0.1.0"
