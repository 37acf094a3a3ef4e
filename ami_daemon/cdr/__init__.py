"""Asterisk CDR records as a second source of calls: backfill after downtime."""
