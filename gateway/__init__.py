"""The HTTP edge: REST for the frontend onto user-mode RPCs, the Clerk webhook, probes."""
