"""Real servers and tools for the integration tests: Orthanc, a fake DICOMweb, DCMTK."""
