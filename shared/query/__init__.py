"""The read side: query functions over the store, the HTTP API, auth, caching and scrape-time metrics.

Nothing here imports the ML stack; ``functions/query`` must start fast.
"""
