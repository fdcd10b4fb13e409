"""The processor service: Kafka in (logs, metrics, health, control), alert transitions out, crash-safe.

One loop, one thread (``run()``); each pass follows these steps:

1. poll the input topics (consumer group ``tocsin-processor``); a
   rebalance happens while this call waits (see recovery below);
2. decode and validate every record: a decode failure, a record of the
   wrong schema or absurd values go to the dead-letter topic with headers
   (error, source topic/partition/offset, stage) and processing continues;
3. feed the engine (windows, evaluation at event-time instants);
4. every ``tick_interval_s``: apply manual resolves from the control topic
   and run the processing-time tick on caught-up partitions (a fetch
   succeeded since the last tick and the position is at the high-water mark
   it reported; none while fetches fail, and for as long again as an outage
   lasted: ``tocsin.processors.fetches``), so event time never follows the
   wall clock while the broker cannot be read;
5. produce the transitions to the alerts topic, keyed by fingerprint;
6. at most once a second, outside the lock the HTTP view takes: commit the
   input offsets whose transitions and dead letters the broker acknowledged,
   record by record (``tocsin.processors.outbox``: a failed record is sent
   again, in order), each with the Kafka timestamp of the last record
   processed as commit metadata. Nothing is committed before its
   consequences are on the alerts topic.

Recovery without a state store, on start and on every assignment (the
listener runs on kafka-python's IO thread, which may not call the
consumer: on revocation it flushes the producer, so every transition is on
the alerts topic before any new owner reads it, and it notes the new
assignment; the loop applies it after ``poll`` returns, dropping that poll's
records, which are fetched again from the seeks below):

1. read the compacted alerts topic to its end; adopt the latest event of
   every fingerprint whose service lives in a newly assigned partition
   (agents key by service with the default murmur2 partitioner, so the
   partition of a service is computed, not guessed);
2. seek each new partition to ``committed record time - replay span``
   (``offsets_for_times``); the span is the longest window plus its timers
   plus grace, so windows and timers are whole again when the replay reaches
   the committed offset;
3. evaluation skips instants whose window is not yet whole (after a
   mid-log seek), and a tracker emits nothing at or before its restored
   transition: recomputed transitions are not emitted twice, lost ones are;
4. no wall-clock tick touches a partition until it has caught up;
5. re-apply recent manual resolves (the control topic is read by every
   process, since it is keyed by fingerprint, not by service).
Partitions kept across an (eager) rebalance keep their state unless their
committed offset moved past ours (someone else owned them meanwhile).
"""

from tocsin.processors.service.changelog import partition_for, read_alert_changelog
from tocsin.processors.service.loop import GC_THRESHOLDS, ProcessorService, build
from tocsin.processors.service.telemetry import SERVICE_NAME, LatencyCounts

__all__ = ["GC_THRESHOLDS", "SERVICE_NAME", "LatencyCounts", "ProcessorService", "build", "partition_for",
           "read_alert_changelog"]
