"""Identity service: users, contacts, phone verification, Clerk sync, principals."""
