"""`manage.py chaos --cluster`: the chaos run with every role on a host of its own.

Hosts are Linux network namespaces on one bridge (root only). Modules, in the order a run uses
them:
- `plan`: hosts, addresses, names and the network fault schedule, as plain data;
- `registry`, `kernel`: what the run created, written down first, and its removal (also of
  what crashed runs left: `manage.py chaos --cleanup`);
- `network`: the namespaces and the bridge; cutting a host off, partitioning two hosts;
- `services`: the cluster's own PostgreSQL and Redis;
- `stack`: the system's processes placed on the hosts, and clients that use every web host;
- `partitions`: the network faults during the load, and the broker watched meanwhile;
- `evidence`: what the system did during each fault; `report`: its tables;
- `runner`: one cluster run, start to verdict, built on `chaos.runner.ChaosRun`.
"""
