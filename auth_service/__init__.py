"""Accounts, emailed one-time codes, password login, RS256 tokens and the JWKS."""
