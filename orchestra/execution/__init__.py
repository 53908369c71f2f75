"""Making the call: the executor walks a decision's candidates through a backend, guarded by
retries, deadlines, circuit breakers, rate limits, balancing, health checks and the cache."""
