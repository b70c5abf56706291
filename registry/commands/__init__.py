"""Click command groups, one module per room. Each module exposes ``group`` or ``commands``.

Commands stay thin: parse options, call a library function, print with :func:`emit`.
"""
