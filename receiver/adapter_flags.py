"""The Google DICOM adapter's other flags: accepted where harmless, refused where not.

A Deployment written for the adapter keeps working: flags that only tuned the adapter's own
machinery are accepted and named in a warning. Flags that asked it to change what is stored
(redaction, transcoding, routing) are refused with an error, because ignoring them would
store something other than what the operator asked for.
"""

from __future__ import annotations

import argparse

from ingest.contracts.settings import ConfigError

IGNORED = {
    "dimse_cmove_aet": "C-MOVE is not served",
    "aet_dictionary": "C-MOVE is not served",
    "aet_dictionary_inline": "C-MOVE is not served",
    "fuzzy_matching": "C-FIND is not served",
    "stow_http2": "the uploader chooses its HTTP version",
    "oauth_scopes": "credentials come from Application Default Credentials",
    "monitoring_project_id": "logs go to stdout/stderr as JSON for Cloud Logging",
    "persistent_file_storage_location": "see --spool_dir and --ack_after",
    "persistent_file_upload_retry_amount": "retries follow the queue's backoff",
    "min_upload_delay": "retries follow the queue's backoff",
    "max_waiting_time_btw_uploads": "retries follow the queue's backoff",
    "dicomweb_addr": "use --dicomweb_address",
    "dicomweb_stow_path": "use --dicomweb_address",
}
REFUSED = {
    "redact_remove_list": "instances are stored byte for byte; redact before sending",
    "redact_keep_list": "instances are stored byte for byte; redact before sending",
    "redact_filter_profile": "instances are stored byte for byte; redact before sending",
    "store_compress_to_transfer_syntax": "instances are stored as received, never transcoded",
    "destination_config_path": "one DICOM store per pipeline; run a pipeline per destination",
    "destination_config_inline": "one DICOM store per pipeline; run a pipeline per destination",
}
_PREFIX = "adapter_flag__"


def add_adapter_flags(parser: argparse.ArgumentParser) -> None:
    for name in (*IGNORED, *REFUSED):
        parser.add_argument(
            f"--{name}", dest=_PREFIX + name, nargs="?", const="", help=argparse.SUPPRESS
        )


def check_adapter_flags(namespace: argparse.Namespace) -> list[str]:
    """Raise for a refused flag; the warnings for ignored ones."""
    given = [n for n in (*IGNORED, *REFUSED) if getattr(namespace, _PREFIX + n, None) is not None]
    for name in given:
        if name in REFUSED:
            raise ConfigError(f"--{name} is not supported: {REFUSED[name]}")
    return [f"--{name} is accepted and has no effect: {IGNORED[name]}" for name in given]
