// Package engine is the queue behind the root package's API: intake past
// Enqueue's fast path, admission, the collector and the senders, the keyed
// shards, and the durability tiers. The root package (github.com/vineroute/
// vinequeue) validates the Config, runs Enqueue's fast path over this
// package's slot table (Queue.Fast) with its pinning assembly, and forwards
// everything else here; users read its documentation, not this one's.
//
// # Data path, by file
//
//	enqueue.go   intake past the fast path: per-P rings, hand-off (one CAS), spare rings
//	admit.go     the one admission step every intake call passes (governor, Policy)
//	keyed.go     EnqueueKey's shards: FIFO per key, one batch in flight per shard
//	ack.go       EnqueueAck: the ack inbox, ack groups, one wake per group
//	collect.go   the collector: rings and shards into batches; Flush; Stop
//	central.go   the central stage in shards, one collector each, chosen by P
//	deliver.go   the senders: retries (batch.Attempt), OnDrop, dead letters
//	park.go      ParkKeys: keys held back behind their dead letter, and released
//	parkwait.go  ParkKeys: a failed keyed batch waiting for room for its dead letter
//	tier.go      the durability tier interface, its contract, the memory tier
//	walmode.go   the tiers with a WAL: overflow, periodic, sync; spans, the durable inbox
//	spill.go     spilling at the hard level (a capability of tiers with a WAL)
//	replay.go    replay of what New found unacknowledged, beside intake
//	stats.go     Stats and Health
//	durable.go   Stats.DurableThrough; the write ticket (a batch is written only if found undelivered)
//
// The tiers live here rather than in a package of their own because they
// do not separate cleanly: each tier works on the engine's own units (a
// pending batch and its spans, a keyed shard under its lock, the
// collector's checkpoint, the durable inbox, the intake gate) and on its
// counters, so a separate package would have to export all of those, and
// the tiers would be the engine in another folder. What is separate is the
// WAL itself (package wal); a tier is the engine's use of it.
//
// # Invariants
//
//   - Pinned rule: between pinning (the root's assembly, or pin.Pin here)
//     and unpinning nothing blocks: HandOff, which the root calls pinned,
//     touches the P's slot, the ring and lock-free structures only (as
//     does EnqueueKey's pinned push into a keyed ring); getting
//     a ring, charging the governor, waking the collector and logging
//     happen after unpinning (AfterWatermark, refill).
//   - Intake waits for the collector, never for a sender: an Enqueue that
//     finds no spare ring parks until the collector recycles one
//     (waitSpare), and an EnqueueKey that needs a ring past its shard's
//     bound of full rings parks until the collector has cut them into
//     batches, in flight or not (waitRoom). Each counts as waiting (a
//     count, or the shard's wake channel taken under its lock) before it
//     looks at what it waits for, and Stop, the memory stall and the tick
//     wake both, so a wake is never lost. Only memory (admission, the
//     Policy) bounds the backlog.
//   - One tier per queue, chosen in New (newTier); no code outside it asks
//     for the mode. The log (Queue.wal) and spilling (Queue.spill) are
//     capabilities, nil when the tier lacks them.
//   - Refused means refused: Stop closes the intake gate and waits for the
//     calls inside it, and closes the keyed shards for the keyed calls that
//     write nowhere else (it seals their tails: a call that reserved a ring
//     index before is pinned until it has published it, and Stop's wait
//     for pinned calls covers it), so an item is either refused before it
//     is written anywhere or accepted and delivered (or dropped and
//     counted).
//   - Stop keeps its deadline: once out of time it gives up what is left
//     and writes nothing. In the periodic tier, where an item is written
//     only if found undelivered, a Stop whose ctx can end runs a
//     checkpoint's writing as it begins (writeUnwritten, then writeKeyed
//     for what keyed shards hold behind a batch in flight, in each key's
//     order), and senders write later batches before Send; a Stop whose
//     ctx cannot end (Close) gives nothing up, so it writes nothing
//     for Stop's sake (collector.stop).
//   - Retention: a drained ring slot, batch slot or fifo slot holding
//     pointers is zeroed.
//
// # Concurrency
//
// Every exported method is safe for concurrent use. Producers run intake;
// one collector goroutine per central shard (Config.Collectors) owns that
// shard's handed-off rings, the batch it is cutting and its ready list; the
// primary collector also owns the keyed shards' cut queues (and makes
// their spare rings, keyed.go), the durable inbox, the ack inbox, Flush
// and Stop, and asks the others to drain for them (central.go); Workers sender goroutines, shared by the shards, each
// own one batch at a time; the replayer, the unspiller and the releaser of
// parked keys (when there are) hand batches to the primary over channels;
// with parking, one more goroutine writes the dead letters of failed keyed
// batches that waited for room (parkwait.go). Stop waits for all of them, except a Send that
// ignores its ctx past Stop's deadline (abandoned, see deliver.go).
package engine
