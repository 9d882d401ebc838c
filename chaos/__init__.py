"""The chaos run (`manage.py chaos`): the real processes under load and faults, then the invariants.

Modules, in the order a run uses them:
- `config`: the run's options and the environment every child process gets;
- `faults`: the sandbox fault plan (defaults, `--fault-rate` scaling, per-fault overrides);
- `procs`, `redis_ops`, `database`, `stack`: starting, killing and stopping the processes,
  restarting Redis and dropping database connections;
- `load`: customers, and bookings made through the real HTTP API with idempotent retries;
- `disruptions`: SIGKILLs of workers, the Redis restart, the connection drop, fault phases;
- `progress`: the live display;
- `snapshot`: our database and each sandbox partner's ground truth as plain data;
- `checks`: the invariants of docs/design.md, as pure functions over a snapshot;
- `report`: the terminal tables and the JSON document;
- `runner`: one run from start to verdict.
"""
