"""DIMSE status codes we answer with, named after PS3.4 / PS3.7 so handlers never use bare numbers."""

SUCCESS = 0x0000
# C-STORE (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# C-ECHO and general (PS3.7 C)
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5: refused, the calling AE may not use this service
