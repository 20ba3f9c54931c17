"""Subcommand registrations for the `walt` CLI (argument parsing + dispatch only)."""

from __future__ import annotations
