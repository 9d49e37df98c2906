"""Egress for allowlisted sandboxes: the host-side proxy, its policy, and the in-sandbox bridge."""
