"""
The edge: HTTP, SSE and WebSocket in front of the runtime (Quart-Trio on Hypercorn).
"""
