"""Everything replicas share through Redis, in one place: the key schema (`keys`),
connecting (`client`), the one background loop with backoff (`loop`), and what is
synchronised: selection state, rate limits, rollouts, purges."""
