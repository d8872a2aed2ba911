"""Node roles: each reads its sensors into a readings dict the payload codec encodes."""
