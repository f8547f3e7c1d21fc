"""The sources: one folder per external system, listed once in `registry.py`.

`base.py` is the contract a folder fulfils (client, streams, capabilities, identity, catalogue
metrics), `sync.py` the stream loop that commits each page with its cursor, and `crm.py` what the
CRM sources share. See docs/architecture.md, "a new source".
"""
