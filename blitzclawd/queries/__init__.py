"""Queries by domain: views and actors call named functions here instead of holding SQL.

- accounts: users and their API keys;
- billing: balances as users see them, usage, auto top-up settings (a balance itself changes
  only in blitzclawd.ledger, through the billing actor);
- instances: a user's instances and the changes they ask for;
- fleet: pool servers as the API sees them, health results, daemons.

Claiming servers and queueing jobs, shared by the API and the fleet actors, is
blitzclawd.fleet.pool. Every query that reads a user's data is scoped by the user's id in its
statement.
"""
