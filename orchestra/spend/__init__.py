"""Everything about money: budgets, prices, estimates, the ledger interface and the guard."""
