package vinequeue

// Stats is a snapshot of the queue's counters and gauges.
type Stats struct {
	// Counters since New.
	Enqueued  uint64 // items accepted (Enqueue returned nil)
	Delivered uint64 // items in batches whose Send returned nil
	Rejected  uint64 // items refused with ErrFull
	Dropped   uint64 // items handed to OnDrop (retries exhausted, Stop deadline)
	Spilled   uint64 // items written to the WAL by the governor
	Replayed  uint64 // items recovered from the WAL at start-up
	Retries   uint64 // Send calls that were retries
	Corrupt   uint64 // WAL records lost to corruption
	Delayed   uint64 // slow-path delays applied at the soft level
	Blocked   uint64 // Enqueue calls that waited at the hard level (Policy Block)
	Batches   uint64 // Send calls that returned nil

	// Gauges at the time of the call.
	Buffered  uint64 // items accepted and not yet delivered or dropped
	BytesHeld uint64 // bytes held by the queue, by SizeOf
	Level     Level
	BatchSize uint64 // current target batch size
	WALBytes  uint64 // bytes of WAL segments on disk
}
