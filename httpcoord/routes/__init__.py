"""aiohttp handlers, one module per resource, kept thin: validate, build a txn,
``node.propose``/read, render. Errors become problem+json in one middleware.
"""
