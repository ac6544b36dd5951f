"""
Stored state: the store interfaces, their SQLite implementations, ContextStore and PromptLibrary.
"""
