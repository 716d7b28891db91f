#!/usr/bin/env python3
"""Patch mediasoup 3.13.5's worker sources to build against Debian 12's libraries, and fix a DTLS crash.

Usage: mediasoup_3_13_5.py WORKER_DIR   (the `worker/` folder of the extracted npm package)

Why:
* worker/meson.build and deps/libwebrtc/meson.build call subproject() directly, and the wraps download
  sources (unreachable offline). We rewrite each subproject into pkg-config dependency() lookups.
  The libraries are then linked as shared Debian libraries instead of `link_whole` static archives.
* DtlsTransport.cpp's BIO callback compares the operation as a value, so it answers 1 to the control
  query BIO_CTRL_GET_KTLS_SEND; Debian's kTLS-enabled libssl then skips its DTLS write buffer and
  segfaults at the first handshake where mediasoup is the DTLS client. Testing the flag as a bit fixes it.

Every edit is an exact text match: if the sources differ from what we expect, we stop with an error
rather than build something half-patched.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The subprojects worker/meson.build declares; SYSTEM_DEPS below replaces each of them.
SUBPROJECTS = {"openssl", "libuv", "libsrtp2", "usrsctp", "abseil-cpp", "catch2", "flatbuffers"}

# The subproject variables the meson files read, mapped to our dependency variables.
# A `None` value marks a static library that was link_whole'd: with shared system libs it goes away.
VARIABLES: dict[str, str | None] = {
    "absl_container_dep": "absl_container_dep",
    "absl_strings_dep": "absl_strings_dep",
    "absl_types_dep": "absl_types_dep",
    "openssl_dep": "openssl_dep",
    "libuv_dep": "libuv_dep",
    "libsrtp2_dep": "libsrtp2_dep",
    "usrsctp_dep": "usrsctp_dep",
    "flatbuffers_dep": "flatbuffers_dep",
    "catch2_dep": "catch2_dep",
    "absl_container_lib": None,
    "libcrypto_lib": None,
    "libssl_lib": None,
    "libuv": None,
    "libsrtp2": None,
    "usrsctp": None,
    "flatbuffers_lib": None,
}

SYSTEM_DEPS = """\
# Patched for Debian system libraries (scripts/patches/mediasoup_3_13_5.py): pkg-config lookups
# instead of downloading subprojects.
openssl_dep = dependency('openssl', version: '>= 3.0')
libuv_dep = dependency('libuv')
# Debian's libsrtp2.pc points at /usr/include while the worker includes <srtp.h>: add the srtp2 folder.
libsrtp2_system = dependency('libsrtp2', version: '>= 2.4')
libsrtp2_dep = declare_dependency(
  dependencies: libsrtp2_system,
  compile_args: ['-I' + libsrtp2_system.get_variable(pkgconfig: 'includedir') / 'srtp2'],
)
usrsctp_dep = dependency('usrsctp')
flatbuffers_dep = dependency('flatbuffers')
absl_container_dep = declare_dependency(dependencies: [
  dependency('absl_flat_hash_map'),
  dependency('absl_flat_hash_set'),
  dependency('absl_btree'),
  dependency('absl_inlined_vector'),
])
absl_strings_dep = dependency('absl_strings')
absl_types_dep = declare_dependency(dependencies: [dependency('absl_optional'), dependency('absl_variant')])
catch2_dep = dependency('catch2-with-main', required: false)
"""

SUBPROJECT_BLOCK = re.compile(
    r"^(\w+)_proj = subproject\(\n  '([\w-]+)',\n  default_options: \[\n(?:    .*\n)*?  \],\n\)\n", re.M
)
GET_VARIABLE = re.compile(r"\w+_proj\.get_variable\('(\w+)'\)")

DTLS_OLD = "long resultOfcallback = (operationType == BIO_CB_RETURN) ? static_cast<long>(ret) : 1;"
DTLS_NEW = "long resultOfcallback = (operationType & BIO_CB_RETURN) ? static_cast<long>(ret) : 1;"


def fail(message: str) -> None:
    sys.exit(f"patch mediasoup 3.13.5: {message}")


def replace_subprojects(text: str, where: str, expected: set[str], header: str) -> str:
    found = [m.group(2) for m in SUBPROJECT_BLOCK.finditer(text)]
    if set(found) != expected:
        fail(f"{where}: expected subprojects {sorted(expected)}, found {sorted(found)}")
    first = SUBPROJECT_BLOCK.search(text)
    assert first is not None
    text = text[: first.start()] + header + text[first.start() :]
    return SUBPROJECT_BLOCK.sub("", text)


def replace_variables(text: str, where: str) -> str:
    def substitute(line: str) -> str | None:
        match = GET_VARIABLE.search(line)
        if match is None or "wingetopt" in line:  # Windows-only, inside an `if`: leave it
            return line
        name = match.group(1)
        if name not in VARIABLES:
            fail(f"{where}: unknown subproject variable {name!r}")
        replacement = VARIABLES[name]
        if replacement is None:
            return None  # a link_whole static library: the shared system library replaces it
        return line[: match.start()] + replacement + line[match.end() :]

    lines = [substitute(line) for line in text.splitlines(keepends=True)]
    out = "".join(line for line in lines if line is not None)
    leftover = [
        line.strip()
        for line in out.splitlines()
        if ("subproject(" in line or "_proj.get_variable(" in line) and "wingetopt" not in line
    ]
    if leftover:
        fail(f"{where}: a subproject call survived the rewrite: {leftover[0]}")
    return out


def patch_worker_meson(path: Path) -> None:
    text = path.read_text()
    # wingetopt is Windows-only and sits inside an `if`; leave it alone.
    windows = "if host_machine.system() == 'windows'\n  wingetopt_proj"
    if windows not in text:
        fail(f"{path}: Windows wingetopt block not found where expected")
    text = replace_subprojects(text, str(path), SUBPROJECTS, SYSTEM_DEPS)
    text = replace_variables(text, str(path))
    path.write_text(text)


def patch_libwebrtc_meson(path: Path) -> None:
    text = path.read_text()
    text = replace_subprojects(text, str(path), {"abseil-cpp"}, "# abseil: declared in worker/meson.build.\n")
    path.write_text(replace_variables(text, str(path)))


def patch_dtls(path: Path) -> None:
    text = path.read_text()
    if text.count(DTLS_OLD) != 1:
        fail(f"{path}: BIO callback line not found exactly once: {DTLS_OLD}")
    path.write_text(text.replace(DTLS_OLD, DTLS_NEW))


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: mediasoup_3_13_5.py WORKER_DIR")
    worker = Path(sys.argv[1])
    patch_worker_meson(worker / "meson.build")
    patch_libwebrtc_meson(worker / "deps" / "libwebrtc" / "meson.build")
    patch_dtls(worker / "src" / "RTC" / "DtlsTransport.cpp")
    print(f"patched {worker} for Debian system libraries and the DTLS BIO callback")


if __name__ == "__main__":
    main()
