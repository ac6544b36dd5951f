"""
Budgets: the BudgetKeeper actor, pricing, and the ledger of every charge.
"""
