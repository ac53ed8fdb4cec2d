"""A mutation corpus of C-STOREs sent as raw bytes: every request is answered, the node survives, and
what it acknowledged is stored byte for byte.

The corpus is pydicom's test files (dataset bytes as encoded, each in its own transfer syntax) and
seeded mutations of them: byte flips, truncations, element lengths of 2^32-1 and other huge values,
bogus VRs, flipped command sets; then crafted ones whose status the node promises: bad UIDs
(0xA900), sequences nested past limits.max_sequence_depth (0xC000), a deflate bomb (0xA700) and a
dataset over limits.max_instance_size (A-ABORT). PACSDECK_SOAK=1 (`make soak`) sends ten times as
many random mutations (over 2,000 C-STOREs).
"""

from __future__ import annotations

import os
import random
import struct
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread

from storage import status

from .conftest import dataset_bytes, dcmtk
from .raw_peer import (
    DEFLATED_LE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    VERIFICATION,
    RawPeer,
    abort_reason,
    command_set,
    element,
    pdata,
    pdu,
    read_command,
)

SEED = int(os.environ.get("PACSDECK_MUTATION_SEED", "20250611"))
SOAK = os.environ.get("PACSDECK_SOAK", "").lower() in ("1", "true", "yes")
SCALE = 10 if SOAK else 1  # random mutations per kind: x1 ~ 300 C-STOREs in all, x10 over 2,000
ANSWER_DEADLINE = 10.0  # seconds for each answer (a status, an A-ABORT or the connection closing)
MAX_HANGS = 3  # each costs the deadline and one already fails the test: stop sending after this many
MAX_INSTANCE_SIZE = 8 * 1024 * 1024
MAX_SEQUENCE_DEPTH = 32  # the node's default limits.max_sequence_depth
CALLING = "STORESCU"
TEST_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."
BIG_ENDIAN = "1.2.840.10008.1.2.2"
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}  # PS3.5 7.1.2
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D

pytestmark = pytest.mark.timeout(1500 if SOAK else 180)

# What a case may be answered with: a status code, any status, or an A-ABORT / the connection closing.
ANY_STATUS = "any status"
ABORT = "abort"


# --- the corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """A top-level element of a dataset: where its header starts, how long the header is."""

    tag: int
    vr: str | None  # None in implicit VR
    offset: int
    header: int
    length: int


@dataclass(frozen=True)
class Base:
    """One test file: its dataset bytes after the File Meta, its SOP class and transfer syntax."""

    name: str
    sop_class: str
    transfer_syntax: str
    dataset: bytes
    elements: tuple[Element, ...]  # empty for a Deflated dataset (its offsets are in the inflated stream)

    @property
    def little_endian(self) -> bool:
        return self.transfer_syntax != BIG_ENDIAN

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax == IMPLICIT_LE


@dataclass(frozen=True)
class Case:
    """One C-STORE to send: the command set and dataset exactly as they go on the wire."""

    kind: str
    detail: str
    sop_class: str  # the presentation context's abstract syntax
    transfer_syntax: str
    command: bytes
    dataset: bytes
    expect: tuple  # status codes, ANY_STATUS and/or ABORT
    isolate: bool = False  # a damaged command set: the association is dropped after its answer
    packed: bool = False  # every PDV of the message in as few P-DATA-TF PDUs as fit (PS3.8 9.3.5 allows it)

    def allows(self, outcome: Outcome) -> bool:
        if outcome.kind == "status":
            return ANY_STATUS in self.expect or outcome.status in self.expect
        return outcome.kind in ("abort", "closed") and ABORT in self.expect

    @property
    def sop_uid(self) -> str | None:
        """The Affected SOP Instance UID the command carries (what the node stores under)."""
        try:
            raw = read_command(self.command).get(0x1000)
            return raw.rstrip(b"\0").decode("ascii") if raw else None
        except (struct.error, UnicodeDecodeError):
            return None


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def store_command(sop_class: bytes, sop_instance: bytes, msg_id: int = 1) -> bytes:
    """A C-STORE-RQ command set (implicit VR LE) with the UIDs exactly as given."""
    return command_set(
        element(0x0000, 0x0002, sop_class),
        element(0x0000, 0x0100, struct.pack("<H", 0x0001)),
        element(0x0000, 0x0110, struct.pack("<H", msg_id)),
        element(0x0000, 0x0700, struct.pack("<H", 0)),
        element(0x0000, 0x0800, struct.pack("<H", 0x0001)),
        element(0x0000, 0x1000, sop_instance),
    )


def meta_end(data: bytes) -> int:
    """Where the dataset starts: after the preamble and every (0002,xxxx) element (explicit VR LE),
    whether or not the group length is there."""
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4 : pos + 6].decode("ascii", "replace")
        if vr in LONG_VRS:
            pos += 12 + struct.unpack_from("<L", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def _elements(ds, start: int, dataset: bytes, little: bool, implicit: bool) -> tuple[Element, ...]:
    """The top-level elements pydicom left raw, with their headers found in `dataset`."""
    out = []
    order = "<" if little else ">"
    for tag in ds.keys():  # noqa: SIM118 - iterating a pydicom Dataset yields its elements, .keys() its tags
        raw = ds.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is None or raw.length == 0xFFFFFFFF:
            continue
        vr = None if implicit else raw.VR
        header = 8 if implicit or vr not in LONG_VRS else 12
        offset = tell - start - header
        if offset < 0 or dataset[offset : offset + 4] != struct.pack(order + "HH", tag >> 16, tag & 0xFFFF):
            continue
        out.append(Element(int(tag), vr, offset, header, raw.length))
    return tuple(out)


def load_bases() -> list[Base]:
    """pydicom's test files that parse with a usable File Meta and a storage SOP class."""
    bases = []
    for path in sorted(p for p in TEST_FILES.iterdir() if p.is_file()):
        try:
            with warnings.catch_warnings():  # a few test files are damaged on purpose; pydicom says so
                warnings.simplefilter("ignore")
                ds = dcmread(path)
            meta = ds.file_meta
            syntax, sop_class = str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPClassUID)
            str(meta.MediaStorageSOPInstanceUID)
        except Exception:  # noqa: BLE001 - not a Part 10 file with a File Meta: not a base
            continue
        if not sop_class.startswith(STORAGE_PREFIX):
            continue
        data = path.read_bytes()
        start = meta_end(data)
        dataset = data[start:]
        if not dataset or len(dataset) > 1024 * 1024:
            continue
        elements = (
            () if syntax == DEFLATED_LE else _elements(ds, start, dataset, syntax != BIG_ENDIAN, syntax == IMPLICIT_LE)
        )
        bases.append(Base(path.name, sop_class, syntax, dataset, elements))
    return bases


class UIDs:
    """Fresh SOP Instance UIDs, so each case is stored under its own name and compared alone, and
    message IDs, so each answer can be matched to its request."""

    def __init__(self, run: int):
        self.serial = 0
        self.run = run
        self.messages = 0

    def message_id(self) -> int:
        self.messages += 1
        return self.messages % 0xFFFF + 1

    def fresh(self, length: int) -> str | None:
        """A valid UID of exactly `length` characters, or None if it cannot be that short."""
        self.serial += 1
        head = f"2.25.{self.run}{self.serial}"
        if length == len(head):
            return head
        fill = length - len(head) - 1
        return head + "." + "1" * fill if fill >= 1 else None


def renamed(base: Base, uids: UIDs) -> tuple[bytes, bytes]:
    """(dataset, command SOP Instance UID): the dataset with a fresh SOPInstanceUID of the same length
    (no offset moves), or as it was when it has none we can rewrite in place."""
    elem = next((e for e in base.elements if e.tag == SOP_INSTANCE_UID), None)
    if elem is not None and elem.length >= 8:
        raw = base.dataset[elem.offset + elem.header : elem.offset + elem.header + elem.length]
        padded = raw.endswith((b"\0", b" "))
        uid = uids.fresh(elem.length - 1 if padded else elem.length)
        if uid is not None:
            value = uid.encode() + raw[-1:] if padded else uid.encode()
            start = elem.offset + elem.header
            return base.dataset[:start] + value + base.dataset[start + elem.length :], _uid(uid)
    ds = dcmread(TEST_FILES / base.name, stop_before_pixels=True)
    return base.dataset, _uid(str(ds.file_meta.MediaStorageSOPInstanceUID).rstrip("\0 "))


def header_bytes(tag: int, vr: str | None, length: int, little: bool) -> bytes:
    order = "<" if little else ">"
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)
    if vr is None:
        return head + struct.pack(order + "L", length)
    if vr in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(order + "L", length)
    return head + vr.encode() + struct.pack(order + "H", length)


def with_value(base: Base, dataset: bytes, tag: int, value: bytes) -> bytes:
    """`dataset` (same layout as base.dataset) with top-level element `tag` given another value."""
    elem = next(e for e in base.elements if e.tag == tag)
    end = elem.offset + elem.header + elem.length
    return dataset[: elem.offset] + header_bytes(tag, elem.vr, len(value), base.little_endian) + value + dataset[end:]


HUGE_LONG = (0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFF0, 0x80000000, 0x7FFFFFFF, 0x7FFFFFFE, 0x10000000, 0x01000000)
HUGE_SHORT = (0xFFFF, 0xFFFE, 0x8000, 0x7FFF)
BOGUS_VRS = (b"ZZ", b"\0\0", b"ob", b"  ", b"\xff\xff", b"UN", b"SQ", b"OB", b"US", b"UT", b"a1")


def _flip(rng: random.Random, data: bytes, near_start: bool) -> tuple[bytes, str]:
    out = bytearray(data)
    offsets = []
    for _ in range(rng.randint(1, 4)):
        offset = rng.randrange(min(len(out), 512) if near_start else len(out))
        out[offset] ^= rng.randint(1, 255)
        offsets.append(offset)
    return bytes(out), "flips at " + ",".join(map(str, offsets))


def random_cases(bases: list[Base], rng: random.Random, uids: UIDs, scale: int) -> list[Case]:
    """Each base as it is, then seeded mutations of random bases, in a seeded order."""
    cases = []

    def case(kind, detail, base, command, dataset, expect=(ANY_STATUS,), isolate=False):
        cases.append(
            Case(
                kind, f"{base.name}: {detail}", base.sop_class, base.transfer_syntax, command, dataset, expect, isolate
            )
        )

    def fresh(base):
        dataset, uid = renamed(base, uids)
        return store_command(_uid(base.sop_class), uid, uids.message_id()), dataset

    for base in bases:
        command, dataset = fresh(base)
        case("original", "as encoded", base, command, dataset)
    structured = [b for b in bases if b.elements]
    explicit = [b for b in structured if not b.implicit]
    for _ in range(90 * scale):
        base = rng.choice(bases)
        command, dataset = fresh(base)
        mutated, detail = _flip(rng, dataset, near_start=rng.random() < 0.5)
        case("flip", detail, base, command, mutated)
    for _ in range(45 * scale):
        base = rng.choice(bases)
        command, dataset = fresh(base)
        cut = rng.randrange(1, min(len(dataset), 1024)) if rng.random() < 0.5 else rng.randrange(1, len(dataset))
        case("truncate", f"cut to {cut} of {len(dataset)} bytes", base, command, dataset[:cut])
    for _ in range(40 * scale):
        base = rng.choice(structured)
        command, dataset = fresh(base)
        elem = rng.choice(base.elements)
        order = "<" if base.little_endian else ">"
        if elem.header == 12 or elem.vr is None:
            length, at, fmt = rng.choice(HUGE_LONG), elem.offset + elem.header - 4, "L"
        else:
            length, at, fmt = rng.choice(HUGE_SHORT), elem.offset + 6, "H"
        mutated = dataset[:at] + struct.pack(order + fmt, length) + dataset[at + struct.calcsize(fmt) :]
        case(
            "huge-length", f"({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X}) length 0x{length:X}", base, command, mutated
        )
    for _ in range(25 * scale):
        base = rng.choice(explicit)
        command, dataset = fresh(base)
        elem = rng.choice(base.elements)
        vr = rng.choice([v for v in BOGUS_VRS if v != (elem.vr or "").encode()])
        mutated = dataset[: elem.offset + 4] + vr + dataset[elem.offset + 6 :]
        case("bogus-vr", f"({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X}) {elem.vr} -> {vr!r}", base, command, mutated)
    made = 0
    while made < 15 * scale:
        base = rng.choice(bases)
        command, dataset = fresh(base)
        mutated, detail = _flip(rng, command, near_start=False)
        field_ = _command_field(mutated)
        if field_ not in (None, 0x0001):
            continue  # another kind of message (a C-CANCEL, a response) is not answered at all
        made += 1
        case("command-flip", detail, base, mutated, dataset, expect=(ANY_STATUS, ABORT), isolate=True)
    rng.shuffle(cases)
    return cases


def _command_field(command: bytes) -> int | None:
    """CommandField of a (perhaps damaged) command set, None when it has no usable one."""
    try:
        value = read_command(command).get(0x0100)
    except struct.error:
        return None
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


# --- crafted cases with a promised answer --------------------------------------------------------

BAD_UIDS = {
    "empty": b"",
    "space": b"1.2.840 .10008",
    "trailing-newline": b"1.2.840.10008\n",
    "65-chars": b"1." + b"2" * 63 + b"\0",
    "leading-zero": b"1.02",
    "letters": b"1.2.840.1a",
}
REFERENCED_IMAGE_SEQUENCE = (0x0008, 0x1140)
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF


def _tag(group_elem: tuple[int, int], length: int) -> bytes:
    return struct.pack("<HHL", *group_elem, length)


def nested_sequence(depth: int, defined: bool) -> bytes:
    """(0008,1140) in implicit VR LE, each item holding the next one down, `depth` sequences deep.
    Built flat (no recursion): the headers outside in, then the delimiters inside out."""
    if defined:
        heads, inner = [], 0  # each level: a sequence header and an item header around what is inside
        for _ in range(depth):
            heads.append(_tag(ITEM, inner))
            heads.append(_tag(REFERENCED_IMAGE_SEQUENCE, inner + 8))
            inner += 16
        return b"".join(reversed(heads))
    head = _tag(REFERENCED_IMAGE_SEQUENCE, UNDEFINED) + _tag(ITEM, UNDEFINED)
    tail = _tag(ITEM_END, 0) + _tag(SEQUENCE_END, 0)
    return head * depth + tail * depth


def with_sequence(base: Base, dataset: bytes, sequence: bytes) -> bytes:
    """`dataset` (implicit VR) with `sequence` inserted where (0008,1140) goes in tag order."""
    after = next(e for e in base.elements if e.tag > 0x00081140)
    return dataset[: after.offset] + sequence + dataset[after.offset :]


def padded(dataset: bytes, size: int) -> bytes:
    """`dataset` (explicit VR LE) with Data Set Trailing Padding (FFFC,FFFC) OB of `size` zero bytes."""
    return dataset + header_bytes(0xFFFCFFFC, "OB", size, True) + bytes(size)


def raw_deflate(data: bytes) -> bytes:
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return squeezer.compress(data) + squeezer.flush()


def crafted_cases(bases: list[Base], uids: UIDs) -> list[Case]:
    explicit = next(b for b in bases if b.name == "CT_small.dcm")
    implicit = next(b for b in bases if b.name == "MR_small_implicit.dcm")
    cases = []

    def case(kind, detail, base, command, dataset, expect, syntax=None):
        cases.append(
            Case(
                kind, f"{base.name}: {detail}", base.sop_class, syntax or base.transfer_syntax, command, dataset, expect
            )
        )

    def store_rq(sop_class: bytes, sop_instance: bytes) -> bytes:
        return store_command(sop_class, sop_instance, uids.message_id())

    dataset, uid = renamed(explicit, uids)
    case(
        "oversize",
        f"a dataset of {MAX_INSTANCE_SIZE + 1024 * 1024} bytes",
        explicit,
        store_rq(_uid(explicit.sop_class), uid),
        padded(dataset, MAX_INSTANCE_SIZE + 1024 * 1024),
        (ABORT,),
    )
    for base in (explicit, implicit):
        for name, bad in BAD_UIDS.items():
            dataset, uid = renamed(base, uids)
            klass = _uid(base.sop_class)
            case(
                "bad-uid",
                f"command AffectedSOPClassUID {name}",
                base,
                store_rq(bad, uid),
                dataset,
                (status.DATASET_DOES_NOT_MATCH_SOP_CLASS,),
            )
            case(
                "bad-uid",
                f"command AffectedSOPInstanceUID {name}",
                base,
                store_rq(klass, bad),
                dataset,
                (status.DATASET_DOES_NOT_MATCH_SOP_CLASS,),
            )
            dataset, uid = renamed(base, uids)
            case(
                "bad-uid",
                f"dataset SOPInstanceUID {name}",
                base,
                store_rq(klass, uid),
                with_value(base, dataset, SOP_INSTANCE_UID, bad),
                (status.DATASET_DOES_NOT_MATCH_SOP_CLASS,),
            )
            dataset, uid = renamed(base, uids)
            case(
                "bad-uid",
                f"dataset StudyInstanceUID {name}",
                base,
                store_rq(klass, uid),
                with_value(base, dataset, STUDY_INSTANCE_UID, bad),
                (status.DATASET_DOES_NOT_MATCH_SOP_CLASS,),
            )
        dataset, uid = renamed(base, uids)
        other, _ = renamed(base, uids)
        case(
            "bad-uid",
            "command and dataset SOP Instance UIDs differ",
            base,
            store_rq(_uid(base.sop_class), uid),
            with_value(base, other, SOP_INSTANCE_UID, _uid("1.2.3.4")),
            (status.DATASET_DOES_NOT_MATCH_SOP_CLASS,),
        )
    for depth in (MAX_SEQUENCE_DEPTH - 2, 40, 5000):
        expect = (status.SUCCESS,) if depth <= MAX_SEQUENCE_DEPTH else (status.CANNOT_UNDERSTAND,)
        for defined in (True, False):
            dataset, uid = renamed(implicit, uids)
            case(
                "deep-sequence",
                f"{depth} deep, {'defined' if defined else 'undefined'} length",
                implicit,
                store_rq(_uid(implicit.sop_class), uid),
                with_sequence(implicit, dataset, nested_sequence(depth, defined)),
                expect,
            )
    dataset, uid = renamed(explicit, uids)
    case(
        "deflate",
        "inflates to 1 MiB more (under max_instance_size)",
        explicit,
        store_rq(_uid(explicit.sop_class), uid),
        raw_deflate(padded(dataset, 1024 * 1024)),
        (status.SUCCESS,),
        syntax=DEFLATED_LE,
    )
    dataset, uid = renamed(explicit, uids)
    case(
        "deflate-bomb",
        f"inflates past max_instance_size ({MAX_INSTANCE_SIZE} bytes)",
        explicit,
        store_rq(_uid(explicit.sop_class), uid),
        raw_deflate(padded(dataset, 2 * MAX_INSTANCE_SIZE)),
        (status.OUT_OF_RESOURCES,),
        syntax=DEFLATED_LE,
    )
    return cases


# --- sending --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str  # "status", "abort", "closed", "hang", "no-context", "refused-association"
    status: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind == "status":
            return f"status 0x{self.status:04X}"
        return f"{self.kind} {self.detail}".strip()


def parse_accept(body: bytes) -> tuple[set[int], int]:
    """(accepted presentation context IDs, the node's maximum PDU length) from an A-ASSOCIATE-AC."""
    accepted, max_length, pos = set(), 0, 68
    while pos + 4 <= len(body):
        item, length = body[pos], struct.unpack_from(">H", body, pos + 2)[0]
        value = body[pos + 4 : pos + 4 + length]
        if item == 0x21 and value[2] == 0:
            accepted.add(value[0])
        elif item == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_len = struct.unpack_from(">H", value, sub + 2)[0]
                if value[sub] == 0x51:
                    max_length = struct.unpack_from(">L", value, sub + 4)[0]
                sub += 4 + sub_len
        pos += 4 + length
    return accepted, max_length


@dataclass
class Sender:
    """C-STOREs over one association at a time, proposing every (SOP class, transfer syntax) the cases
    need; after an A-ABORT, a closed connection or a hang, the next case opens a new association."""

    port: int
    called: str
    pairs: list[tuple[str, str]]
    peer: RawPeer | None = None
    accepted: set[int] = field(default_factory=set)
    fragment: int = 16384
    associations: int = 0
    message_id: int = 0

    def __post_init__(self):
        assert len(self.pairs) <= 128, "one association proposes at most 128 presentation contexts"
        self.ids = {pair: 2 * i + 1 for i, pair in enumerate(self.pairs)}

    def _open(self) -> Outcome | None:
        self.peer = RawPeer(self.port, timeout=ANSWER_DEADLINE)
        contexts = [(cx, sop_class, [syntax]) for (sop_class, syntax), cx in self.ids.items()]
        answer = self.peer.associate(self.called, CALLING, contexts)
        self.associations += 1
        if answer[0] != 0x02:
            self.drop()
            return Outcome("refused-association", detail=f"PDU type 0x{answer[0]:02X}")
        self.accepted, max_length = parse_accept(answer[1])
        self.fragment = max_length - 6 if max_length else 65536  # a PDV header is 6 bytes of the PDU
        return None

    def drop(self) -> None:
        """Abort our side (if the connection still stands) and close."""
        if self.peer is not None:
            try:
                self.peer.send(pdu(0x07, bytes(4)))
            except OSError:
                pass
            self.peer.close()
        self.peer = None

    def send(self, case: Case) -> Outcome:
        if self.peer is None:
            refused = self._open()
            if refused is not None:
                return refused
        cx = self.ids[(case.sop_class, case.transfer_syntax)]
        if cx not in self.accepted:
            return Outcome("no-context", detail=f"{case.sop_class} in {case.transfer_syntax} not accepted")
        data = case.dataset
        frames = [pdata(cx, case.command, command=True)]
        frames += [
            pdata(cx, data[i : i + self.fragment], command=False, last=i + self.fragment >= len(data))
            for i in range(0, len(data), self.fragment)
        ]
        if case.packed:
            frames = packed(frames, self.fragment + 6)
        outcome = None
        try:
            self.peer.send(b"".join(frames))
        except OSError as err:  # the node stopped reading and closed: its A-ABORT may still be readable
            outcome = Outcome("closed", detail=f"while sending: {type(err).__name__}")
        try:
            answer = self.peer.dimse_response(ANSWER_DEADLINE)
        except TimeoutError as err:
            answer, outcome = None, Outcome("hang", detail=str(err))
        except OSError as err:
            answer = None
            outcome = outcome or Outcome("closed", detail=type(err).__name__)
        if isinstance(answer, dict) and 0x0900 in answer:
            outcome = Outcome("status", struct.unpack("<H", answer[0x0900])[0])
            asked, answered = read_command(case.command).get(0x0110), answer.get(0x0120)
            if not case.isolate and answered != asked:
                outcome = Outcome("wrong-message", detail=f"answers message {answered!r}, not {asked!r}")
        elif abort_reason(answer) is not None:
            outcome = Outcome("abort", detail=f"reason {abort_reason(answer)}")
        elif answer is not None:
            outcome = Outcome("unexpected", detail=f"{answer!r:.80}")
        outcome = outcome or Outcome("closed")
        if outcome.kind != "status" or case.isolate:
            self.drop()
        return outcome

    def release(self) -> bool:
        """A-RELEASE of the association still open; True if the node answered A-RELEASE-RP."""
        if self.peer is None:
            return True
        self.peer.send(pdu(0x05, bytes(4)))
        answer = self.peer.read_pdu(ANSWER_DEADLINE)
        self.peer.close()
        self.peer = None
        return answer is not None and answer[0] == 0x06


def packed(frames: list[bytes], max_length: int) -> list[bytes]:
    """The PDV items of one-PDV P-DATA-TF `frames` regrouped, as many per PDU as `max_length` holds."""
    out, body = [], b""
    for frame in frames:
        item = frame[6:]
        if body and len(body) + len(item) > max_length:
            out.append(pdu(0x04, body))
            body = b""
        body += item
    return out + [pdu(0x04, body)] if body else out


@dataclass
class Run:
    """What was sent and how each was answered."""

    outcomes: list[tuple[Case, Outcome]] = field(default_factory=list)
    acknowledged: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> first dataset stored
    seconds: float = 0.0
    associations: int = 0
    released: bool = True

    def failures(self) -> list[str]:
        def named(expect):
            return " or ".join(f"status 0x{e:04X}" if isinstance(e, int) else e for e in expect)

        return [
            f"{case.kind} [{case.detail}]: {outcome}, expected {named(case.expect)}"
            for case, outcome in self.outcomes
            if not case.allows(outcome)
        ]

    def summary(self) -> str:
        kinds = Counter(case.kind for case, _ in self.outcomes)
        answers = Counter(str(outcome) if outcome.kind == "status" else outcome.kind for _, outcome in self.outcomes)
        return (
            f"{len(self.outcomes)} C-STOREs in {self.seconds:.1f} s over {self.associations} associations "
            f"(seed {SEED}); kinds {dict(sorted(kinds.items()))}; answers {dict(sorted(answers.items()))}; "
            f"{len(self.acknowledged)} stored"
        )


def send_all(node, cases: list[Case]) -> Run:
    pairs = list(dict.fromkeys((case.sop_class, case.transfer_syntax) for case in cases))
    sender = Sender(node.port, node.ae_title, pairs)
    run = Run()
    started = time.monotonic()
    for case in cases:
        outcome = sender.send(case)
        run.outcomes.append((case, outcome))
        if outcome.kind == "status" and outcome.status == status.SUCCESS and case.sop_uid:
            run.acknowledged.setdefault(case.sop_uid, case.dataset)  # duplicates: keep, the first copy stays
        if sum(o.kind == "hang" for _, o in run.outcomes) >= MAX_HANGS:
            break
    run.released = sender.release()
    run.seconds = time.monotonic() - started
    run.associations = sender.associations
    return run


# --- what must hold afterwards -------------------------------------------------------------------


def assert_node_healthy(node, run: Run) -> None:
    """No hang, no unexpected answer, the node alive and answering C-ECHO, no traceback, and every
    acknowledged instance indexed, on disk, and byte-identical to what was sent."""
    hangs = [f"{case.kind} [{case.detail}]" for case, outcome in run.outcomes if outcome.kind == "hang"]
    assert not hangs, f"{len(hangs)} request(s) never answered within {ANSWER_DEADLINE:g} s: {hangs}"
    failures = run.failures()
    assert not failures, f"{len(failures)} unexpected answer(s):\n" + "\n".join(failures[:30])
    assert node.proc.poll() is None, f"the node exited ({node.proc.returncode}):\n{node.log_text()[-3000:]}"
    assert run.released, "the last association was not released (no A-RELEASE-RP)"
    echo = dcmtk(
        "echoscu", "-aet", "ECHOSCU", "-aec", node.ae_title, "-to", "5", "127.0.0.1", str(node.port), timeout=30
    )
    assert echo.returncode == 0, f"C-ECHO after the corpus failed: {echo.stdout}{echo.stderr}"
    log = node.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
    rows = {row["sop_uid"]: row for row in node.rows("SELECT sop_uid, pool, path FROM instances")}
    assert sorted(set(run.acknowledged) - set(rows)) == [], "acknowledged but not in the index"
    assert sorted(set(rows) - set(run.acknowledged)) == [], "in the index but never acknowledged"
    missing = [uid for uid, row in rows.items() if not node.file(row).is_file()]
    assert missing == [], f"index rows without their file: {missing}"
    differing = [uid for uid, sent in run.acknowledged.items() if dataset_bytes(node.file(rows[uid])) != sent]
    assert differing == [], f"stored bytes differ from those sent for {differing}"
    assert node.temp_files() == [], "temporary .part files left behind"


@pytest.fixture
def node(node_factory):
    return node_factory(limits={"max_instance_size": MAX_INSTANCE_SIZE}, workers=1).start()


def test_every_mutated_c_store_is_answered_and_what_is_acknowledged_is_stored_intact(node, record_property):
    bases = load_bases()
    assert len(bases) >= 40, f"only {len(bases)} usable test files in {TEST_FILES}"
    cases = random_cases(bases, random.Random(SEED), UIDs(1), SCALE)
    run = send_all(node, cases)
    record_property("summary", run.summary())
    assert_node_healthy(node, run)
    assert len(run.outcomes) == len(cases), run.summary()
    assert run.acknowledged, "nothing was stored: the corpus did not reach the node"


def test_bad_uids_deep_sequences_deflate_bombs_and_oversize_datasets_get_their_answer(node, record_property):
    bases = load_bases()
    run = send_all(node, crafted_cases(bases, UIDs(2)))
    record_property("summary", run.summary())
    assert_node_healthy(node, run)


# --- node bugs this corpus found (fixed): several PDVs in a PDU, a PDV without its header, a dataset in another VR ---


def test_a_p_data_tf_holding_command_and_dataset_pdvs_is_answered(node):
    bases = {b.name: b for b in load_bases()}
    uids = UIDs(3)
    cases = []
    for name in ("CT_small.dcm", "MR_small_implicit.dcm"):
        base = bases[name]
        dataset, uid = renamed(base, uids)
        cases.append(
            Case(
                "packed",
                f"{name}: command and dataset PDVs in one PDU",
                base.sop_class,
                base.transfer_syntax,
                store_command(_uid(base.sop_class), uid, uids.message_id()),
                dataset,
                (status.SUCCESS,),
                packed=True,
            )
        )
    assert_node_healthy(node, send_all(node, cases))


def test_a_pdv_without_its_message_control_header_is_aborted(node):
    peer = RawPeer(node.port, timeout=ANSWER_DEADLINE)
    accepted, _ = parse_accept(peer.associate(node.ae_title, CALLING, [(1, VERIFICATION, [IMPLICIT_LE])])[1])
    assert accepted == {1}
    peer.send(pdu(0x04, struct.pack(">LB", 1, 1)))  # a PDV item of length 1: its context ID and nothing more
    answer = peer.read_pdu(ANSWER_DEADLINE)
    peer.close()
    assert abort_reason(answer) is not None, f"answered {answer!r}, not an A-ABORT"
    assert "Traceback" not in node.log_text()


def test_a_dataset_encoded_in_another_syntax_than_negotiated_is_refused(node):
    bases = {b.name: b for b in load_bases()}
    uids = UIDs(4)
    cases = []
    for name, syntax in (("MR_small.dcm", IMPLICIT_LE), ("MR_small_implicit.dcm", EXPLICIT_LE)):
        base = bases[name]
        dataset, uid = renamed(base, uids)
        cases.append(
            Case(
                "wrong-syntax",
                f"{name} sent on a {syntax} context",
                base.sop_class,
                syntax,
                store_command(_uid(base.sop_class), uid, uids.message_id()),
                dataset,
                (status.CANNOT_UNDERSTAND, status.DATASET_DOES_NOT_MATCH_SOP_CLASS),
            )
        )
    assert_node_healthy(node, send_all(node, cases))
