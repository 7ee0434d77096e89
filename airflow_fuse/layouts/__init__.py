"""Table layouts: which keys a table needs (one module per format)."""
