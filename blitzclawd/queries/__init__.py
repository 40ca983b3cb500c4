"""Queries by domain: views and actors call named functions here instead of holding SQL.

- accounts: users and their API keys;
- billing: balances as users see them, usage, auto top-up settings (a balance itself changes
  only in blitzclawd.ledger, through the billing actor);
- instances: a user's instances and the changes they ask for;
- jobs: the provisioner's durable queue;
- fleet: pool servers as the API sees them;
- pool_drain: an operator's drain of the pool and the hold on refilling it;
- alerts: operators' alerts about a user (a balance that ran out);
- health: what the health monitor checks and records, and what operators read of it;
- daemons: the daemons sharing the database (heartbeat, janitor, operators).

Server rows (claimed, assigned, rebuilt, gone) and queueing a job, shared by the API and the
fleet actors, are blitzclawd.fleet.pool; the notifications table is blitzclawd.notify.queue; the
proxy's own tables (reservations, leases) are in blitzclawd.proxy. Every query that reads a
user's data is scoped by the user's id in its statement.
"""
