"""DIMSE status codes we answer with, named after PS3.4 / PS3.7 so handlers never use bare numbers."""

SUCCESS = 0x0000
# C-STORE (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5: refused, the calling AE may not use this service
# Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # matches continue; an optional key asked for is not supported
CANCEL = 0xFE00  # matching or sub-operations terminated (C-CANCEL, or the query_limit cut a C-FIND)
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
MOVE_DESTINATION_UNKNOWN = 0xA801
SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
