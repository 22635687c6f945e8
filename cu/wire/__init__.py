"""Wire formats shared by the node (producer) and its clients (verifiers). Pure Python: nothing here imports
the native extension.

Modules: response (signed, attested results: signature label, identity fields, the Attestation header,
canonical JSON, the endorsement document's format name and path).
"""
