"""
Providers: the ProviderActor and one backend per upstream wire protocol.
"""
