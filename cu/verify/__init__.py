"""Client-side verification of signed, attested node results (`aocu verify`).

Standalone: imports the evidence verifier (`attestation`), the shared wire format (`cu.wire`) and the
pure-Python codecs, never the native extension (`cu._native`, `cu.hashing`, `cu.engine`), so a client needs
no C++ build. Modules: transport (raw responses, fetching, the endorsement document), endorsements
(EndorsedNode), response (verify_response, ResponseReport), cli (`aocu verify`).
"""

from cu.verify.endorsements import EndorsedNode, report_data_of
from cu.verify.response import ResponseReport, is_ans104, verify_response
from cu.verify.transport import (
    MAX_DOCUMENT,
    MAX_RESPONSE,
    RawResponse,
    ResponseFormatError,
    evidence_url,
    fetch,
    fetch_endorsements,
    load_document,
    parse_raw_response,
    to_curl_bytes,
)

__all__ = ["MAX_DOCUMENT", "MAX_RESPONSE", "EndorsedNode", "RawResponse", "ResponseFormatError", "ResponseReport",
           "evidence_url", "fetch", "fetch_endorsements", "is_ans104", "load_document", "parse_raw_response",
           "report_data_of", "to_curl_bytes", "verify_response"]
