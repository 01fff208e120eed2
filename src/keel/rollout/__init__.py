"""Safe change: versioned policies with approval, and (to come) replay, shadow and canary."""
