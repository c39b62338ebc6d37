"""STOW-RS of queued instances into a DICOMweb store."""
