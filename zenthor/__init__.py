"""The shared kit every Zenthor process imports: config, ids, errors, auth, db, server, clients."""
