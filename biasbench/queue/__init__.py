"""The queue's vocabulary and decisions: task types, statuses, ordering, dependency wiring.

`model` and `decide` are pure; `submit` and `snapshot` talk to the Prefect API. The queue-manager
flow (flows/queue_manager.py) and the REST shim (queue_api/) both build on this package."""
