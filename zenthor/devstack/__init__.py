"""The local stack: PostgreSQL and Temporal from wheels, and every Zenthor process (`make dev`)."""
