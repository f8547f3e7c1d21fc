"""A local stand-in for the outside world.

dataset.py  a deterministic, messy dataset in each API's native shapes
server.py   HTTP servers speaking the Salesforce, HubSpot, Stripe and Zendesk wire formats
sample.py   metric values put straight into a store, for scoring tests
"""
