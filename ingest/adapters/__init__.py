"""Adapters behind the ports: spool, SQLite queue, Cloud Storage, Pub/Sub, DICOMweb."""
