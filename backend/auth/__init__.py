"""Operators' access: users, tokens with a role, revocation, `flask auth`."""
