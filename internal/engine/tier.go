package engine

import "time"

// # Durability tiers
//
// What the queue keeps across a crash is decided once, in New, by choosing
// one tier from WAL.Mode: memory (no WAL.Dir), overflow, periodic or sync.
// The rest of the queue never asks which tier it runs: intake, the
// collector and the senders call the tier at the points below, and each
// tier does there what its promise needs and nothing else.
//
// The contract, call by call (who calls, from which goroutine, and what
// each tier does):
//
//	call          caller                                 memory  overflow  periodic               sync
//	acceptOne     Enqueue past its fast path (producer)  ring    ring      ring                   append, fsync, inbox
//	acceptBatch   EnqueueBatch (producer)                ring    ring      ring                   append, fsync, inbox
//	acceptKeyed   EnqueueKey, sync tier only (producer,  -       -         -                      append, fsync: span
//	              admitted, inside the intake gate)
//	acceptAck     EnqueueAck, AckDelivered (producer,    -       -         -                      append, fsync: span
//	              admitted, inside the intake gate)
//	persist       the collector at a checkpoint, for     -       -         write if not on disk   -
//	              every batch not delivered yet (in a                      (the caller claimed
//	              sender's slot, in Send or retrying,                      its write ticket)
//	              cut and waiting), and as a Stop whose
//	              ctx can end begins; a sender before
//	              Send once such a Stop has begun;
//	              whoever gives a batch up at
//	              Stop out of time; a sender whose Send
//	              failed for good
//	persistShard  the collector cutting or checkpointing -       -         write what is not      -
//	              a keyed shard, and as a Stop whose                       on disk
//	              ctx can end begins (shard lock held)
//	checkpoint    the collector, every checkpointEvery   never   never     cut, write, fsync      never
//	acknowledge   a sender after Send returned nil, or   -       AckRange  AckRange               AckRange
//	              whoever drops a batch (OnDrop)
//	deadLetter    a sender, for a batch failed for good  no      dlq       dlq                    dlq
//
// ("ring": the item goes into the caller's P ring, see enqueue.go; "inbox":
// once durable the items go to the collector through the durable inbox; "-":
// nothing to do.) A batch cut from memory is not written before Send: one
// whose Send succeeds before a checkpoint finds it is never written (a
// delivered item is not lost by a crash), and needs no acknowledgement;
// one still undelivered when a checkpoint or a Stop out of time comes is
// written then, and acknowledged when its Send succeeds (the write ticket,
// durable.go). EnqueueAck's AckDelivered items then wait in the ack
// inbox and go out in the collector's ack batch, written like any batch
// (ack.go); its AckDurable items take the
// durable inbox's path (appendDurable: append, fsync, inbox) in every tier
// with a log, and wait as AckDelivered does in the memory tier. Every call
// runs unpinned: a tier may lock, write, fsync and log. Only the intake
// calls run on producer goroutines; the others run on the collector or a
// sender, one batch at a time per goroutine.
//
// What each tier promises, for an item whose call returned nil:
//
//	tier      on disk                                         a SIGKILL loses
//	memory    never                                           what memory held
//	overflow  what the spiller wrote (fsynced per spill)      what memory held, not spilled
//	periodic  within checkpointEvery (SyncInterval), unless   at most SyncInterval of items (plus
//	          delivered first                                 the time one checkpoint takes, its
//	                                                          fsync included)
//	sync      before the call returns                         nothing
//
// and in every tier with a WAL a batch is acknowledged only once it is
// delivered or dropped (after its dead letter is written): a crash
// duplicates only items of batches not finished yet, in Send or past it
// and not yet acknowledged (a sender acknowledges its batch before it
// takes the next: at most one batch per sender, though not necessarily
// among the last ones delivered, since the others go on meanwhile); and a
// batch left on disk (Stop out of time, a dead letter that could not be
// written) is not acknowledged, so the next New replays it.
//
// Two capabilities are not part of the interface because not every tier
// has them, and the queue asks for them by their presence rather than by
// the mode:
//
//   - the log (Queue.wal, a *walTier; nil for the memory tier): what a WAL
//     directory gives beyond the data path, namely replaying what New found
//     unacknowledged, the dead-letter API, the WAL figures in Stats and
//     closing the log at Stop;
//   - spilling (Queue.spill, a *spiller; nil unless the tier has a log and
//     the Policy is Spill): at the hard level the collector writes batches
//     to the log and lets them go from memory (spill.go).
type tier[T any] interface {
	// acceptOne takes one item past Enqueue's fast path; see Enqueue for
	// the errors.
	acceptOne(v T) error
	// acceptBatch takes vs in order and returns how many it took; see
	// EnqueueBatch.
	acceptBatch(vs []T) (int, error)
	// acceptKeyed makes an admitted EnqueueKey item as durable as the tier
	// promises before it enters its shard, with its key (a keyed record,
	// so that a replay knows it), and returns where it is on disk (a zero
	// span: not on disk). On an error the item is refused (the caller
	// undoes its admission). Called only when the keyed intake is gated
	// (keyedShards.gated, the sync tier): the others write nothing before
	// the shard (the periodic tier writes the key with the item later,
	// from the shard: persistShard).
	acceptKeyed(key uint64, v T) (span, error)
	// acceptAck makes an admitted EnqueueAck (AckDelivered) item as
	// durable as the tier promises before it enters the ack inbox, and
	// returns where it is on disk (a zero span: not on disk); see ack.go.
	// On an error the item is refused (the caller undoes its admission).
	acceptAck(v T) (span, error)
	// persist puts b on disk if the tier writes undelivered batches and
	// b is not there yet (b.spans empty); the caller has claimed b's write
	// ticket, if it has one (durable.go). A failure keeps b in memory
	// only: counted, logged, and a full WAL refuses intake until a write
	// succeeds again (Queue.walFull).
	persist(b *pending[T], rw *recordWriter)
	// persistShard does persist's work for the items of a keyed shard
	// not on disk yet, without cutting them. The caller (the collector)
	// holds s.mu; the tier may release it while it writes, and returns
	// with it held.
	persistShard(c *collector[T], s *keyedShard[T])
	// checkpointEvery is the period of checkpoint; 0: the tier has none.
	checkpointEvery() time.Duration
	// checkpoint runs on the collector every checkpointEvery.
	checkpoint(c *collector[T])
	// acknowledge tells the log that b's items are finished (delivered,
	// or dropped): they never replay. A batch left on disk is not
	// acknowledged.
	acknowledge(b *pending[T])
	// deadLetter keeps the items of b, which failed for good, where they
	// can be requeued; kept false: the tier keeps no dead letters. On an
	// error they are not kept.
	deadLetter(b *pending[T], reason error) (kept bool, err error)
}

// ringIntake is the intake of the tiers whose items travel through the P
// rings: memory, overflow and periodic.
type ringIntake[T any] struct{ q *Queue[T] }

func (r ringIntake[T]) acceptOne(v T) error               { return r.q.enqueueRing(v) }
func (r ringIntake[T]) acceptBatch(vs []T) (int, error)   { return r.q.enqueueRingBatch(vs) }
func (ringIntake[T]) acceptKeyed(uint64, T) (span, error) { return span{}, nil }

// memoryTier keeps nothing on disk.
type memoryTier[T any] struct{ ringIntake[T] }

func (memoryTier[T]) persist(*pending[T], *recordWriter)         {}
func (memoryTier[T]) persistShard(*collector[T], *keyedShard[T]) {}
func (memoryTier[T]) checkpointEvery() time.Duration             { return 0 }
func (memoryTier[T]) checkpoint(*collector[T])                   {}
func (memoryTier[T]) acknowledge(*pending[T])                    {}
func (memoryTier[T]) deadLetter(*pending[T], error) (bool, error) {
	return false, nil
}
