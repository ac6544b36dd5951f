"""
The Router actor: plans, dispatches and accounts for every LLM request.
"""
