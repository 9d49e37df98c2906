"""The spec's two-phase example (network-security.md), with its indentation restored."""
from __future__ import annotations

SPEC_PROFILES = """\
profiles:
  download:
    mode: sandbox
    network: on
    network_allow:
      - "*.npmjs.org"
    writable: true
    no_new_privileges: true
  scripts:
    mode: sandbox
    network: off
    writable: true
    no_new_privileges: true
dispatch:
  npm-download:
    match:
      - "npm install --ignore-scripts*"
    profile: download
  npm-rebuild:
    match:
      - "npm rebuild*"
    profile: scripts
"""
