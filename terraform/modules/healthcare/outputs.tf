output "dicom_store_id" {
  description = "projects/P/locations/L/datasets/D/dicomStores/S."
  value       = local.dicom_store_id
}

output "dicomweb_address" {
  description = "DICOMweb base URL of the store (the uploader's DICOM_INGEST_DICOMWEB_ADDRESS)."
  value       = "https://healthcare.googleapis.com/v1/${local.dicom_store_id}/dicomWeb"
}
