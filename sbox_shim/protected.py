"""The project paths that stay read-only in every sandbox that can write the project, when they
exist (layout.py binds them; the persistence guard watches them). No imports: the warm path reads it."""

PROTECTED = ("sbox.yaml", ".sbox.yaml", ".git", ".github", ".vscode", ".idea", ".claude")
