"""/dev/sev-guest ioctls (include/uapi/linux/sev-guest.h): SNP_GET_EXT_REPORT with its certificate table,
falling back to SNP_GET_REPORT. The ioctl function is injectable so the request/response handling is testable."""

from __future__ import annotations

import ctypes
import os
import struct
import time
from collections.abc import Callable

from ..errors import NotAvailable, ProviderError
from ..snp import REPORT_SIZE

SNP_GET_REPORT = 0xC0205300
SNP_GET_EXT_REPORT = 0xC0205302
SNP_GET_DERIVED_KEY = 0xC0205301  # _IOWR('S', 0x1, struct snp_guest_request_ioctl)
VMM_ERR_INVALID_LEN = 1
VMM_ERR_BUSY = 2
RESP_SIZE = 4000
PAGE = 4096
MAX_CERTS = 64 * PAGE

IoctlFn = Callable[[int, int, bytearray], int]


def _default_ioctl(fd: int, request: int, arg: bytearray) -> int:
    import fcntl

    return fcntl.ioctl(fd, request, arg, True)


class SevGuestDevice:
    def __init__(self, path: str = "/dev/sev-guest", *, ioctl: IoctlFn | None = None) -> None:
        self.path = path
        self._ioctl = ioctl or _default_ioctl

    def available(self) -> bool:
        return os.path.exists(self.path)

    def get_report(self, report_data: bytes, vmpl: int = 0, *, extended: bool = True) -> tuple[bytes, bytes]:
        """(1184-byte report, certificate table or b'')."""
        if len(report_data) != 64:
            raise ValueError("REPORT_DATA must be 64 bytes")
        if not 0 <= vmpl <= 3:
            raise ValueError("VMPL must be 0-3")
        if not self.available():
            raise NotAvailable(f"{self.path} not present")
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise NotAvailable(f"cannot open {self.path}: {exc}") from None
        try:
            if extended:
                try:
                    return self._ext(fd, report_data, vmpl)
                except _NoCerts:
                    pass  # host installed no certificates (SNP_SET_EXT_CONFIG never called): plain report
            return self._call(fd, SNP_GET_REPORT, report_data, vmpl, None)[0], b""
        finally:
            os.close(fd)

    def get_derived_key(self, request: bytes) -> bytes:
        """The 64-byte MSG_KEY_RSP for a packed 32-byte MSG_KEY_REQ (attestation.sealing builds and parses
        both; msg_version 1)."""
        if len(request) != 32:
            raise ValueError("MSG_KEY_REQ must be 32 bytes")
        if not self.available():
            raise NotAvailable(f"{self.path} not present")
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise NotAvailable(f"cannot open {self.path}: {exc}") from None
        req, resp = ctypes.create_string_buffer(request, 32), ctypes.create_string_buffer(64)
        try:
            rc_err, fw_error, vmm_error = self._guest_request(fd, SNP_GET_DERIVED_KEY, ctypes.addressof(req),
                                                              ctypes.addressof(resp))
            if rc_err is not None or fw_error or vmm_error:
                raise ProviderError(
                    f"SNP_GET_DERIVED_KEY failed: {rc_err}, fw_error 0x{fw_error:x}, vmm_error {vmm_error}"
                )
            return resp.raw
        finally:
            os.close(fd)

    def _guest_request(self, fd: int, request: int, req_ptr: int, resp_ptr: int) -> tuple[OSError | None, int, int]:
        """One SNP guest request ioctl (msg_version 1), retried while the host answers BUSY; returns the ioctl
        error (or None), the firmware error and the VMM error of the last attempt."""
        for _attempt in range(20):
            arg = bytearray(struct.pack("<BxxxxxxxQQQ", 1, req_ptr, resp_ptr, 0))
            try:
                self._ioctl(fd, request, arg)
                rc_err = None
            except OSError as exc:
                rc_err = exc
            fw_error, vmm_error = struct.unpack_from("<II", arg, 24)
            if vmm_error != VMM_ERR_BUSY:
                return rc_err, fw_error, vmm_error
            time.sleep(0.05)
        raise ProviderError("SNP guest request: host kept answering BUSY")

    def _ext(self, fd: int, report_data: bytes, vmpl: int) -> tuple[bytes, bytes]:
        certs_len = 0
        for _ in range(3):
            report, certs_len_out, err = self._call(fd, SNP_GET_EXT_REPORT, report_data, vmpl, certs_len)
            if err is None:
                return report, certs_len_out
            if err == VMM_ERR_INVALID_LEN:
                if certs_len == 0 and isinstance(certs_len_out, int) and 0 < certs_len_out <= MAX_CERTS:
                    certs_len = certs_len_out
                    continue
                raise ProviderError(f"SNP_GET_EXT_REPORT: bad certificate length {certs_len_out}")
            raise _NoCerts()
        raise ProviderError("SNP_GET_EXT_REPORT: certificate length kept changing")

    def _call(self, fd: int, request: int, report_data: bytes, vmpl: int, certs_len: int | None):  # noqa: ANN202
        req = ctypes.create_string_buffer(report_data + struct.pack("<I", vmpl) + bytes(28), 96)
        resp = ctypes.create_string_buffer(RESP_SIZE)
        certs = ctypes.create_string_buffer(max(certs_len or 0, 1))
        if certs_len is not None:
            ext = ctypes.create_string_buffer(96 + 16)
            ctypes.memmove(ext, req, 96)
            struct.pack_into("<QI", ext, 96, ctypes.addressof(certs), certs_len)
            req_ptr = ctypes.addressof(ext)
        else:
            req_ptr = ctypes.addressof(req)
        rc_err, fw_error, vmm_error = self._guest_request(fd, request, req_ptr, ctypes.addressof(resp))
        if certs_len is not None and vmm_error == VMM_ERR_INVALID_LEN:
            needed = struct.unpack_from("<I", ext, 104)[0]
            return b"", needed, VMM_ERR_INVALID_LEN
        if rc_err is not None or fw_error or vmm_error:
            if certs_len is not None:
                return b"", 0, fw_error or vmm_error or -1
            raise ProviderError(
                f"SNP_GET_REPORT failed: {rc_err}, fw_error 0x{fw_error:x}, vmm_error {vmm_error}"
            )
        status, size = struct.unpack_from("<II", resp.raw, 0)
        if status != 0:
            raise ProviderError(f"SNP firmware MSG_REPORT_RSP status 0x{status:x}")
        if size != REPORT_SIZE:
            raise ProviderError(f"SNP firmware returned a {size}-byte report")
        report = resp.raw[0x20 : 0x20 + REPORT_SIZE]
        table = certs.raw[: certs_len or 0] if certs_len else b""
        return report, table, None


class _NoCerts(Exception):
    pass
