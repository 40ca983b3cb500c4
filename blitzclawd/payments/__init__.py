"""Money in: the Creem API client, webhook signatures and the events billing acts on."""
