"""The shared base of dicom-ingest: contracts, adapters and the queue-worker machinery."""
