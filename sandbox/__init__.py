"""A local stand-in for the outside world, outside the runtime package (the `sandbox` extra).

dataset.py     a deterministic, messy dataset in each API's native shapes
server.py      Sandbox and Faults: the API servers around one dataset, with fault injection
http.py        the shared HTTP server and handler base (routing, counting, faults, TLS)
salesforce.py  hubspot.py  stripe.py  zendesk.py  hooks.py: one module per API family
activities.py  what alerts create: Salesforce Tasks, HubSpot tasks, webhook messages
credentials.py the sandbox's user and secrets
sample.py      metric values put straight into a store, for scoring tests
"""
