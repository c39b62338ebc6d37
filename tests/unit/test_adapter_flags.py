"""The Google DICOM adapter's flags on ``receive`` and ``local``: kept, ignored or refused."""

from __future__ import annotations

import pytest

from dicom_ingest import cli
from ingest.contracts.settings import ConfigError
from receiver.adapter_flags import IGNORED, REFUSED, check_adapter_flags

GUIDE_ARGS = [
    "--dimse_aet=IMPORTADAPTER",
    "--dimse_port=2575",
    "--dicomweb_address=https://healthcare.googleapis.com/v1/projects/p/locations/l"
    "/datasets/d/dicomStores/s/dicomWeb",
]


@pytest.mark.parametrize("command", ["receive", "local"])
def test_the_guides_arguments_parse(command: str) -> None:
    namespace = cli._parser().parse_args([command, *GUIDE_ARGS, "--verbose"])
    assert namespace.dimse_aet == "IMPORTADAPTER"
    assert namespace.dimse_port == "2575"
    assert namespace.verbose == "true"  # a bare boolean, as the adapter takes it
    assert check_adapter_flags(namespace) == []


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_tuning_flags_are_accepted_with_a_warning(name: str) -> None:
    namespace = cli._parser().parse_args(["receive", f"--{name}=x"])
    [warning] = check_adapter_flags(namespace)
    assert warning.startswith(f"--{name} is accepted and has no effect")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_flags_that_change_what_is_stored_are_refused(name: str) -> None:
    namespace = cli._parser().parse_args(["local", f"--{name}=PatientName"])
    with pytest.raises(ConfigError, match=f"--{name} is not supported"):
        check_adapter_flags(namespace)


def test_a_refused_flag_stops_the_command_with_a_readable_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["receive", *GUIDE_ARGS, "--redact_filter_profile=CHC_BASIC"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--redact_filter_profile is not supported" in err
    assert "byte for byte" in err
