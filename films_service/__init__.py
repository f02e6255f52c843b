"""A token-protected film catalogue that verifies RS256 tokens offline with a public key."""
