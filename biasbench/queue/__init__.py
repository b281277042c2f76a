"""The queue: its vocabulary, its decisions, and the one gateway to Prefect.

- `model`: task types, statuses, state sets, `QueueRun` (pure)
- `decide`: the manager's rules, from a snapshot to actions (pure)
- `messages`: the words of the queue's messages (pure)
- `progress`: a task's progress as numbers (pure)
- `gateway`: every Prefect call the queue makes
- `submit`, `control`: what users do (submit, cancel, retry, remove, pause, start, stop)

The queue-manager flow (flows/queue_manager.py) and the REST shim (queue_api/) both build on
this package; they never import each other."""
