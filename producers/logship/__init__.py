"""The log shipper, in the parts Vector's file source has.

* ``discovery``: inputs, globs and excludes, rotation/rename/deletion;
* ``identity``: (device, inode), first-bytes fingerprints, event-id prefixes, copies;
* ``checkpoints``: the state file of acknowledged offsets;
* ``reader``: chunked reads, line splitting, long lines;
* ``events``: records to Avro events;
* ``acks``: ack-gated offsets and the in-flight bytes that pause reading;
* ``shipper``: ``LogShipper``, the loop that ties them together (truncation, copytruncate).
"""

from tocsin.producers.logship.checkpoints import FileState, StateStore
from tocsin.producers.logship.discovery import Source
from tocsin.producers.logship.reader import Tailer
from tocsin.producers.logship.shipper import SHIPPER_PRODUCER_OVERRIDES, LogShipper
from tocsin.producers.logship.stats import ShipStats

__all__ = ["SHIPPER_PRODUCER_OVERRIDES", "FileState", "LogShipper", "ShipStats", "Source", "StateStore", "Tailer"]
