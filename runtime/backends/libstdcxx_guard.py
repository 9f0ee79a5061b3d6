"""Guard against AOTInductor libraries that carry their own libstdc++.

On some torch builds (seen with torch 2.11.0+cu130, g++ 13.3), the generated
``.so`` links libstdc++'s locale and regex code statically: libstdc++ is
missing from its NEEDED list, and it defines hundreds of ``std::locale``
symbols. Loading such a library next to the process's own libstdc++ crashes
in ``std::regex`` construction inside the AOTInductor model's constructor.
The crash goes away when the system libstdc++ is loaded with RTLD_GLOBAL
first, because the library's references then resolve to that one copy.

:func:`prepare_to_load` inspects a library's ELF dynamic section and symbol
table (a few milliseconds, pure Python). It applies that preload only when
the library has this shape. Where loading already works, it changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import struct
import threading
from dataclasses import dataclass

log = logging.getLogger("fxdelegate.runtime")

_SHT_DYNAMIC, _SHT_DYNSYM = 6, 11
_DT_NEEDED = 1
# Defined std::locale symbols above which a library counts as carrying its own copy.
LOCALE_SYMBOLS_THRESHOLD = 50

_lock = threading.Lock()
_preloaded: ctypes.CDLL | None = None


@dataclass
class LibraryShape:
    needed: list[str]
    defined_locale_symbols: int

    @property
    def bundles_libstdcxx(self) -> bool:
        return not any(n.startswith("libstdc++") for n in self.needed) and (
            self.defined_locale_symbols >= LOCALE_SYMBOLS_THRESHOLD
        )


def inspect_library(data: bytes) -> LibraryShape | None:
    """NEEDED entries and defined std::locale symbols of an ELF64 little-endian
    shared library; None for anything else."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    try:
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [
            struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
        ]

        def strings(index: int) -> tuple[int, int]:
            sec = sections[index]
            return sec[4], sec[4] + sec[5]  # file offset, end

        def cstr(table: tuple[int, int], offset: int) -> str:
            start = table[0] + offset
            end = data.index(b"\x00", start, table[1])
            return data[start:end].decode("utf-8", "replace")

        needed: list[str] = []
        locale = 0
        for sec in sections:
            _, kind, _, _, offset, size, link, _, _, entsize = sec
            if kind == _SHT_DYNAMIC:
                table = strings(link)
                for pos in range(offset, offset + size, 16):
                    tag, value = struct.unpack_from("<qQ", data, pos)
                    if tag == 0:
                        break
                    if tag == _DT_NEEDED:
                        needed.append(cstr(table, value))
            elif kind == _SHT_DYNSYM and entsize:
                table = strings(link)
                for pos in range(offset, offset + size, entsize):
                    name_offset, _, _, shndx = struct.unpack_from("<IBBH", data, pos)
                    if (
                        shndx != 0
                        and name_offset
                        and b"St6locale"
                        in data[table[0] + name_offset : table[0] + name_offset + 256].split(
                            b"\x00", 1
                        )[0]
                    ):
                        locale += 1
        return LibraryShape(needed, locale)
    except (struct.error, ValueError, IndexError):
        return None


def prepare_to_load(library: bytes, name: str) -> bool:
    """Preload the system libstdc++ globally if `library` bundles its own; returns
    whether the preload is in effect."""
    global _preloaded
    shape = inspect_library(library)
    if shape is None or not shape.bundles_libstdcxx:
        return _preloaded is not None
    with _lock:
        if _preloaded is None:
            path = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
            _preloaded = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            log.info(
                "%s carries its own copy of libstdc++'s locale code (%d symbols, libstdc++ not in NEEDED); "
                "loaded the system %s with RTLD_GLOBAL first so it does not crash",
                name,
                shape.defined_locale_symbols,
                path,
            )
    return True
