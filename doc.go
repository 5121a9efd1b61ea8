// Package vinequeue hands events off a hot path in a few nanoseconds and
// delivers them in batches to a SendFunc (typically a Kafka producer), with
// bounded memory and no silent loss.
//
// # Data path
//
//	Enqueue(v) ─pin→ rings[P] (SPSC, no shared write) ─BatchSize items: hand-off (one CAS)→
//	  central shard of P (Collectors) → its collector → batches (BatchSize | FlushInterval | Flush | Stop) → Workers × Send
//	EnqueueKey(k, v) → keyed shard of k (FIFO) → one batch in flight per shard
//	EnqueueAck(ctx, v, level) → ack inbox → ordinary batches; waits on its group's outcome
//	governor: bytes held vs limit → soft: delay + warn; hard: Reject | Spill | Block
//	WAL (optional): Sync (durable before Enqueue returns) | Periodic | Overflow → replay on New
//
// This package is the API and Enqueue's fast path; the engine behind it
// (intake past the fast path, admission, collector, senders, keyed shards,
// durability tiers) is in internal/engine.
//
// Enqueue pins the calling goroutine to its P (one assembly call; see pin/)
// and pushes into that P's ring. In the common case it touches only that
// ring's producer cache line and one slot: no lock, no shared write, no
// allocation, no clock read. When the ring holds BatchSize items (or is
// full) the producer hands the whole ring to its P's central shard with one
// compare-and-swap (shard.Stack) and takes a spare ring; each shard's
// collector (Config.Collectors) drains partial rings every FlushInterval/2,
// so an item waits at most FlushInterval before its batch is cut.
//
// # Guarantees
//
//   - Memory mode, Send returning nil: every accepted item (Enqueue returned
//     nil) is delivered exactly once, also when Enqueue races Stop.
//   - Once Stop has sealed intake (its first step, which Health().Closed
//     reports), every Enqueue returns ErrClosed; a call that overlaps that
//     step may still be accepted, and is then delivered. Enqueue never panics.
//   - Order: none across goroutines for Enqueue; FIFO per key for EnqueueKey,
//     with any number of Workers and across retries.
//   - Send errors are retried with exponential backoff and jitter
//     (Config.Retry); a panic in Send is recovered and counted as an error.
//     After the last attempt, or when Stop's context ends first, the batch goes
//     to Config.OnDrop and is counted in Stats.Dropped. Nothing vanishes
//     uncounted: Enqueued = Delivered + Dropped + Buffered.
//   - WAL Sync mode: Enqueue returns once the item is durable; after a crash
//     the next New replays what was not delivered (at least once).
//   - EnqueueAck: a caller chooses per call to wait until its item is on
//     disk and fsynced (AckDurable, in every WAL mode) or until Send has
//     returned nil for the batch holding it (AckDelivered). Its items go
//     out in ordinary full batches; the callers of a batch are woken
//     together, with the batch's outcome (delivered, dropped, or kept in
//     the WAL at Stop). ctx bounds the wait, never the item.
//   - Bad input: an invalid Config gives ErrInvalidConfig naming the field;
//     ErrTooLarge, ErrLocked and ErrWALFull come from the WAL tier.
//
// # Concurrency
//
// Every method is safe for concurrent use. SendFunc is called from at most
// Config.Workers goroutines at once and must not keep the batch slice after it
// returns: the queue reuses it.
package vinequeue
